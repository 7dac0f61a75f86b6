"""Answers about dashboards: the usage ledger, the inventory, the report, the panel tool.

Grafana cannot be installed here: ``tests/support/fake_grafana.py`` is a protocol-faithful
fake of the endpoints used (search with paging and folders, dashboard by uid with
``meta.version`` and ``meta.provisioned``, save with its 412 on a version conflict, plugin
settings, service-account tokens). The ledgers run against a real SQLite file and a real
``redis-server``.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import random
import signal
import threading
import time
import uuid
import wsgiref.simple_server
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import falcon.testing
import pytest

from otel_panel_receiver import grafana_api
from otel_panel_receiver.admin import run_tool
from otel_panel_receiver.config import Settings
from otel_panel_receiver.model import SessionUpdate
from otel_panel_receiver.panel import MARK, PLUGIN_ID
from otel_panel_receiver.payload import decode
from otel_panel_receiver.stores import (
    LmdbSessionStore,
    MemorySessionStore,
    RedisSessionStore,
    SqliteSessionStore,
)
from otel_panel_receiver.stores import lmdb as lmdb_module
from otel_panel_receiver.stores.usage import (
    DAY,
    LmdbUsage,
    MemoryUsage,
    RedisUsage,
    SqliteUsage,
    UsageLedger,
)
from otel_panel_receiver.testing import FakeClock, sample_payload
from otel_panel_receiver.usage import InventoryDashboard, Usage
from tests.support.fake_grafana import FakeGrafana
from tests.support.peers import RedisServer, redis_server

if TYPE_CHECKING:
    from tests.conftest import AppFactory

NOW = 1_700_000_000.0
TOKEN = "glsa_service_account_token"
_START = json.loads(sample_payload("v2-start.json"))


def start(uid: str, *, login: str = "jdoe", at: float = NOW) -> bytes:
    """Return a start payload of a new session on dashboard ``uid``."""
    body = json.loads(json.dumps(_START))
    body["uuid"] = str(uuid.uuid4())
    body["dashboard"]["uid"] = uid
    body["dashboard"]["name"] = f"Dashboard {uid}"
    body["user"]["login"] = login
    body["user"]["id"] = abs(hash(login)) % 10_000 + 1
    body["time"] = int(at)
    return json.dumps(body).encode()


# -- the ledgers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["memory", "lmdb", "sqlite", "redis"])
def open_ledger(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., UsageLedger]]:
    made: list[UsageLedger] = []

    def open_(**limits: Any) -> UsageLedger:
        if request.param == "memory":
            ledger: UsageLedger = MemoryUsage(**limits)
        elif request.param == "sqlite":
            store = SqliteSessionStore(tmp_path / "sessions.db", max_size=0, idle_ttl=0)
            ledger = SqliteUsage(store, **limits)
        elif request.param == "lmdb":
            ledger = LmdbUsage(LmdbSessionStore(tmp_path / "s", max_size=0, idle_ttl=0), **limits)
        else:
            peer = request.getfixturevalue("redis_peer")
            redis_store = RedisSessionStore(peer.url, max_size=0, idle_ttl=0,
                                            prefix=f"t{len(made)}:")  # fmt: skip
            redis_store.client.flushall()
            ledger = RedisUsage(redis_store, **limits)
        made.append(ledger)
        return ledger

    yield open_
    for ledger in made:
        ledger.close()


def test_a_ledger_keeps_each_dashboards_last_view_sessions_per_day_and_viewers(
    open_ledger: Callable[..., UsageLedger],
) -> None:
    ledger = open_ledger()
    ledger.record("g", "a", "A", NOW - 40 * DAY, started=True, viewer=b"v1")
    ledger.record("g", "a", "A renamed", NOW - 2 * DAY, started=True, viewer=b"v2")
    ledger.record("g", "a", "A renamed", NOW - DAY, started=True, viewer=b"v2")
    ledger.record("g", "a", "A renamed", NOW - 3 * DAY, started=False, viewer=b"")  # older view
    ledger.record("g", "b", "B", NOW, started=True, viewer=b"")
    got = {u.uid: u for u in ledger.report(NOW - 30 * DAY)}
    assert (got["a"].name, got["a"].last_view, got["a"].sessions, got["a"].viewers) == (
        "A renamed", NOW - DAY, 2, 1,
    )  # fmt: skip
    assert (got["b"].sessions, got["b"].viewers, got["b"].host) == (1, 0, "g")
    everything = {u.uid: u for u in ledger.report(NOW - 60 * DAY)}
    assert (everything["a"].sessions, everything["a"].viewers) == (3, 2)
    assert sorted(ledger.views()) == sorted((u.host, u.uid, u.name, u.last_view)
                                            for u in ledger.report(0))  # fmt: skip
    ledger.put_blob("inventory", b"\x00{json}")
    assert ledger.get_blob("inventory") == b"\x00{json}" and ledger.get_blob("none") is None


def test_a_ledger_is_bounded_by_dashboards_viewers_and_days(
    open_ledger: Callable[..., UsageLedger],
) -> None:
    ledger = open_ledger(max_dashboards=3, max_viewers=2, retention=10 * DAY)
    for n, uid in enumerate("abcd"):  # "a", viewed first, is the one to go
        ledger.record("g", uid, uid, NOW + n, started=True, viewer=b"")
    assert sorted(u.uid for u in ledger.report(0)) == ["b", "c", "d"]
    for n, viewer in enumerate((b"x", b"y", b"z")):  # the least recent viewer goes
        ledger.record("g", "d", "d", NOW + DAY * n, started=False, viewer=viewer)
    assert {u.uid: u.viewers for u in ledger.report(0)}["d"] == 2
    ledger.record("g", "c", "c", NOW + 20 * DAY, started=True, viewer=b"")  # days past 10 go
    assert {u.uid: u.sessions for u in ledger.report(0)}["c"] == 1


def test_a_flood_of_forged_viewers_and_dashboards_never_grows_the_ledger_past_its_bounds(
    open_ledger: Callable[..., UsageLedger],
) -> None:
    """Viewers are bounded in all, not per dashboard: forged logins push out the oldest."""
    ledger = open_ledger(max_dashboards=50, max_viewers=200)
    for n in range(1_500):
        ledger.record("g", f"d{n % 75}", "x", NOW + n, started=True, viewer=n.to_bytes(16, "big"))
    held = ledger.report(0)
    assert len(held) == 50
    assert sum(u.viewers for u in held) <= 200
    # The most recent viewers are the ones kept.
    assert {u.uid: u.viewers for u in held}["d74"] == 200 // 75 + 1


def test_a_ledger_given_a_journal_at_once_answers_as_one_given_each_record_in_turn(
    open_ledger: Callable[..., UsageLedger],
) -> None:
    """The LMDB ledger folds a journal's records before writing them (each dashboard, day and
    viewer once); the answers must be those of the memory ledger, which notes them one by one:
    the last name, the latest view, the sessions of each day summed, a viewer's latest day."""
    rng = random.Random(7)
    records = [
        (rng.choice("gh"), f"d{rng.randrange(6)}", rng.choice(("One", "Two", "Three")),
         NOW + rng.randrange(-20 * DAY, 20 * DAY), rng.random() < 0.3,
         b"" if rng.random() < 0.2 else f"v{rng.randrange(30)}".encode())
        for _ in range(3_000)
    ]  # fmt: skip
    expected, ledger = MemoryUsage(), open_ledger()
    for host, uid, name, at, started, viewer in records:
        expected.record(host, uid, name, at, started=started, viewer=viewer)
        ledger.record(host, uid, name, at, started=started, viewer=viewer)
    for since in (NOW - 30 * DAY, NOW, NOW + 10 * DAY):
        assert sorted(ledger.report(since), key=repr) == sorted(expected.report(since), key=repr)
    assert sorted(ledger.views()) == sorted(expected.views())


def test_what_a_client_names_is_kept_no_longer_than_a_label() -> None:
    clock = FakeClock(NOW)
    ledger = MemoryUsage()
    usage = Usage(ledger, MemorySessionStore(), max_length=128, clock=clock)
    body = json.loads(start("a"))
    body["dashboard"] |= {"uid": "u" * 60_000, "name": "n" * 60_000}
    body["host"]["hostname"] = "h" * 60_000
    usage.seen(event(json.dumps(body).encode()), SessionUpdate(True, 0.0, False, 0))
    (row,) = ledger.report(0)
    assert max(len(row.uid), len(row.name), len(row.host)) <= 128


# -- the report ---------------------------------------------------------------------------------


def event(body: bytes) -> Any:
    return decode(body, now=int(NOW))


def test_heartbeats_refresh_a_last_view_at_most_once_a_refresh_starts_always() -> None:
    clock = FakeClock(NOW)
    calls: list[tuple[str, bool]] = []

    class Counting(MemoryUsage):
        def record(self, host: str, uid: str, name: str, at: float, **kw: Any) -> None:
            calls.append((uid, kw["started"]))
            super().record(host, uid, name, at, **kw)

    usage = Usage(Counting(), MemorySessionStore(), clock=clock)
    started, going_on = SessionUpdate(True, 0.0, False, 0), SessionUpdate(False, 60.0, False, 0)
    usage.seen(event(start("a")), started)
    usage.seen(event(start("a")), going_on)  # within the minute: not written
    usage.seen(event(start("a")), started)
    clock.advance(61)
    usage.seen(event(start("a")), going_on)
    assert calls == [("a", True), ("a", True), ("a", False)]


def test_the_report_puts_the_never_opened_first_and_flags_what_is_not_in_the_inventory() -> None:
    clock = FakeClock(NOW)
    usage = Usage(MemoryUsage(), MemorySessionStore(), clock=clock)
    started = SessionUpdate(True, 0.0, False, 0)
    for uid, days_ago in (("old", 40), ("recent", 1), ("gone", 50)):
        clock.now = NOW - days_ago * DAY
        usage.seen(event(start(uid)), started)
    clock.now = NOW
    inventory = [InventoryDashboard(uid, f"Dashboard {uid}", "Ops", f"http://g/d/{uid}")
                 for uid in ("never", "old", "recent")]  # fmt: skip
    unused = usage.report(inventory, window=30 * DAY, unused=30 * DAY)
    assert [(r.uid, r.in_inventory) for r in unused] == [
        ("never", True), ("gone", False), ("old", True),
    ]  # fmt: skip
    assert unused[0].last_view is None and unused[0].sessions == 0
    busiest = usage.report(inventory, window=30 * DAY)
    assert [r.uid for r in busiest][:1] == ["recent"] and busiest[0].sessions == 1
    private = Usage(MemoryUsage(), MemorySessionStore(), viewers=False, clock=clock)
    private.seen(event(start("x")), started)
    assert private.report([], window=DAY)[0].viewers is None


# -- the inventory, the endpoint, the metrics: against the fake Grafana ---------------------------


@pytest.fixture
def grafana(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGrafana]:
    monkeypatch.setattr(grafana_api, "_PAGE", 5)  # N dashboards over several pages
    with FakeGrafana() as fake:
        fake.tokens.add(TOKEN)
        fake.plugins.add(PLUGIN_ID)
        for n in range(12):
            folder = None if n % 3 == 0 else (f"f{n % 3}", f"Folder {n % 3}")
            fake.add_dashboard(f"d{n:02}", f"Dashboard d{n:02}", folder=folder)
        yield fake


def receiver_settings(grafana: FakeGrafana, tmp_path: Path, **more: Any) -> Settings:
    token = tmp_path / "grafana-token"
    if not token.exists():  # rewriting it could race the poll of an app made before
        token.write_text(TOKEN + "\n")
    return Settings(grafana_url=grafana.url, grafana_token_file=str(token), new_series_delay=0,
                    **more)  # fmt: skip


def samples(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_n_dashboards_of_which_k_get_traffic_the_report_lists_the_n_minus_k_others(
    make_app: AppFactory, grafana: FakeGrafana, tmp_path: Path
) -> None:
    """The acceptance: N series of dashboard_info, and --unused lists exactly the N-K others."""
    app = make_app(receiver_settings(grafana, tmp_path), stream=io.StringIO())
    app_inventory(app)  # its first poll done
    client = falcon.testing.TestClient(app)
    used = ["d01", "d04", "d07", "d10", "d11"]
    for uid in used:
        assert client.simulate_post("/write", body=start(uid)).status_code == 201
    unknown = client.simulate_post("/write", body=start("not-in-grafana"))
    assert unknown.status_code == 201
    report = client.simulate_get("/api/dashboards/usage", params={"unused": "30d"}).json
    assert report["inventory"]["ok"] and report["inventory"]["dashboards"] == 12
    listed = [row["uid"] for row in report["dashboards"]]
    assert sorted(listed) == sorted(f"d{n:02}" for n in range(12) if f"d{n:02}" not in used)
    assert all(row["last_view"] is None and row["in_inventory"] for row in report["dashboards"])
    everything = client.simulate_get("/api/dashboards/usage").json["dashboards"]
    by_uid = {row["uid"]: row for row in everything}
    assert by_uid["d04"]["sessions"] == 1 and by_uid["d04"]["viewers"] == 1
    assert by_uid["d04"]["folder"] == "Folder 1"
    assert by_uid["d04"]["url"] == f"{grafana.url}/d/d04/dashboard-d04"
    assert by_uid["not-in-grafana"]["in_inventory"] is False
    csv_text = client.simulate_get("/api/dashboards/usage", params={"unused": "30d"},
                                   headers={"Accept": "text/csv"}).text  # fmt: skip
    assert csv_text.splitlines()[0].startswith("uid,name,folder,url")
    assert len(csv_text.splitlines()) == 1 + 12 - len(used)
    metrics = client.simulate_get("/metrics").text
    assert len(samples(metrics, "grafana_analytics_dashboard_info")) == 12
    assert "grafana_analytics_inventory_up 1.0" in metrics
    views = samples(metrics, "grafana_analytics_dashboard_last_view_timestamp_seconds")
    assert len(views) == len(used) + 1


def test_a_failed_poll_keeps_the_last_list_and_says_so_once(
    make_app: AppFactory, grafana: FakeGrafana, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(receiver_settings(grafana, tmp_path), stream=io.StringIO())
    inventory = app_inventory(app)
    assert inventory.state(fresh=True).ok
    grafana.tokens.clear()  # the token was revoked
    for _ in range(3):
        state = inventory.poll()
    assert not state.ok and "401" in state.error and len(state.dashboards) == 12
    assert caplog.text.count("Dashboard inventory poll failed") == 1
    report = falcon.testing.TestClient(app).simulate_get("/api/dashboards/usage").json
    assert report["inventory"]["ok"] is False and "401" in report["inventory"]["error"]
    assert len(report["dashboards"]) == 12  # the list of the last poll that worked


def test_the_inventory_gauges_follow_the_last_poll() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from otel_panel_receiver.self_metrics import observe_dashboards

    reader = InMemoryMetricReader()
    polls = [(True, [{"dashboard_uid": "a"}, {"dashboard_uid": "b"}]), (False, [])]
    observe_dashboards(MeterProvider(metric_readers=[reader]), lambda: [],
                       lambda: polls[0], every=0.0)  # fmt: skip

    def read() -> dict[str, list[float]]:
        data = reader.get_metrics_data()
        assert data is not None
        return {
            m.name: [p.value for p in m.data.data_points]  # type: ignore[union-attr]
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        }

    assert read()["grafana_analytics_dashboard_info"] == [1, 1]
    assert read()["grafana_analytics_inventory_up"] == [1]
    polls.pop(0)
    assert read()["grafana_analytics_inventory_up"] == [0]


def app_inventory(app: Any) -> Any:
    """Return the app's inventory poller, once its first poll is done."""
    inventory = app.inventory
    assert inventory is not None, "no inventory poller"
    wait_for(lambda: inventory.state(fresh=True).at > 0)
    return inventory


def wait_for(check: Callable[[], bool], deadline: float = 10.0) -> None:
    import time

    end = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < end, "did not happen in time"
        time.sleep(0.02)


def test_workers_sharing_a_store_poll_once_per_interval(
    make_app: AppFactory, grafana: FakeGrafana, tmp_path: Path
) -> None:
    store = f"sqlite://{tmp_path}/sessions.db"
    apps = [make_app(receiver_settings(grafana, tmp_path, session_store=store),
                     stream=io.StringIO()) for _ in range(3)]  # fmt: skip
    for app in apps:
        app_inventory(app)
    searches = grafana.calls
    assert searches == 3  # 12 dashboards, 5 a page: one poll, by one of the three
    assert all(app_inventory(app).state(fresh=True).ok for app in apps)


def test_a_failed_poll_is_tried_again_each_tick_by_one_process(
    make_app: AppFactory, grafana: FakeGrafana, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A token file filled after the receiver started is used within a tick, not an interval."""
    (tmp_path / "grafana-token").write_text("")  # the secret is not there yet
    now = [1_800_000_000.0]
    settings = receiver_settings(grafana, tmp_path, inventory_interval=600.0,
                                 session_store=f"sqlite://{tmp_path}/sessions.db")  # fmt: skip
    first = app_inventory(make_app(settings, stream=io.StringIO(), clock=lambda: now[0]))
    state = first.state(fresh=True)
    assert not state.ok and "token file" in state.error and "is empty" in state.error
    # The second process finds this interval polled, and failed: it tries again at once.
    second = app_inventory(make_app(settings, stream=io.StringIO(), clock=lambda: now[0]))
    wait_for(lambda: caplog.text.count("Dashboard inventory poll failed") == 2)
    assert first.tick == 60.0
    (tmp_path / "grafana-token").write_text(TOKEN + "\n")
    assert not first.poll_if_due()  # this tick's retry is taken
    now[0] += 60.0
    assert first.poll_if_due()
    assert not second.poll_if_due()  # it worked: no retry until the next interval
    assert second.state(fresh=True).ok and grafana.calls == 3
    grafana.down = True
    assert not first.poll().ok
    now[0] += 60.0
    assert [second.poll_if_due(), first.poll_if_due()] == [True, False]
    grafana.down = False
    now[0] += 60.0
    assert [first.poll_if_due(), second.poll_if_due()] == [True, False]
    assert second.state(fresh=True).ok


def test_the_report_is_protected_like_metrics(
    make_app: AppFactory, grafana: FakeGrafana, tmp_path: Path
) -> None:
    tokens = tmp_path / "metrics-tokens"
    tokens.write_text("m3trics\n")
    settings = receiver_settings(grafana, tmp_path, metrics_token_file=str(tokens))
    client = falcon.testing.TestClient(make_app(settings, stream=io.StringIO()))
    assert client.simulate_get("/api/dashboards/usage").status_code == 401
    ok = client.simulate_get("/api/dashboards/usage",
                             headers={"Authorization": "Bearer m3trics"})  # fmt: skip
    assert ok.status_code == 200
    bad = client.simulate_get("/api/dashboards/usage", params={"window": "soon"},
                              headers={"Authorization": "Bearer m3trics"})  # fmt: skip
    assert bad.status_code == 400 and "window" in bad.json["error"]


def test_the_dashboards_command_prints_the_report_of_a_running_receiver(
    make_app: AppFactory, grafana: FakeGrafana, tmp_path: Path
) -> None:
    app = make_app(receiver_settings(grafana, tmp_path), stream=io.StringIO())
    app_inventory(app)
    falcon.testing.TestClient(app).simulate_post("/write", body=start("d03"))
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        out = io.StringIO()
        assert run_tool(["dashboards", "--url", url, "--unused", "30d", "--format", "csv"],
                        out) == 0  # fmt: skip
        lines = out.getvalue().splitlines()
        assert len(lines) == 1 + 11 and not any(line.startswith("d03,") for line in lines)
        out = io.StringIO()
        assert run_tool(["dashboards", "--url", url], out) == 0
        table = out.getvalue().splitlines()
        assert table[0].startswith("last view (UTC)") and "Dashboard d03" in table[1]
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


# -- panel install | remove -------------------------------------------------------------------


def panel_tool(grafana: FakeGrafana, tmp_path: Path, *args: str) -> tuple[int, str]:
    token = tmp_path / "editor-token"
    token.write_text(TOKEN)
    out = io.StringIO()
    status = run_tool(["panel", *args, "--grafana-url", grafana.url,
                       "--grafana-token-file", str(token)], out)  # fmt: skip
    return status, out.getvalue()


def analytics_panels(grafana: FakeGrafana, uid: str) -> list[dict[str, Any]]:
    dashboard = grafana.dashboards[uid]["dashboard"]
    panels = [p for top in dashboard["panels"] for p in (top, *(top.get("panels") or []))]
    return [p for p in panels if p.get("type") == PLUGIN_ID]


def test_panel_install_twice_changes_each_dashboard_once_and_remove_undoes_it(
    grafana: FakeGrafana, tmp_path: Path
) -> None:
    grafana.add_dashboard("prov", "Provisioned", provisioned=True)
    grafana.add_dashboard("has", "Has one", panels=[
        {"id": 1, "type": "row", "title": "r", "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
         "panels": [{"id": 2, "type": PLUGIN_ID, "gridPos": {"h": 3, "w": 6, "x": 0, "y": 1}}]},
    ])  # fmt: skip
    status, out = panel_tool(grafana, tmp_path, "install", "--endpoint", "/usage/write")
    assert status == 0, out
    assert len(grafana.saves) == 12 and "12 added, 1 provisioned, 1 unchanged" in out
    assert "[14/14]" in out
    panel = analytics_panels(grafana, "d00")[0]
    assert panel["description"] == MARK and panel["transparent"] and panel["title"] == ""
    assert panel["gridPos"] == {"h": 1, "w": 24, "x": 0, "y": 8}  # below the existing panel
    options = panel["options"]["analyticsOptions"]
    assert options["server"] == "/usage/write" and not options["showDetails"]
    assert options["postStart"] and options["postHeartbeat"] and options["postEnd"]
    assert grafana.saves[0]["message"] == "otel-panel-receiver panel install"
    assert grafana.saves[0]["overwrite"] is False
    status, out = panel_tool(grafana, tmp_path, "install", "--endpoint", "/usage/write")
    assert status == 0 and len(grafana.saves) == 12 and "13 unchanged" in out
    status, out = panel_tool(grafana, tmp_path, "remove")
    assert status == 0 and len(grafana.saves) == 24 and "12 removed" in out
    assert not analytics_panels(grafana, "d00")
    assert len(analytics_panels(grafana, "has")) == 1  # not ours: left alone


def test_a_save_that_meets_a_concurrent_edit_is_made_again_on_the_new_version(
    grafana: FakeGrafana, tmp_path: Path
) -> None:
    grafana.edit_before_save.add("d05")
    status, _ = panel_tool(grafana, tmp_path, "install", "--endpoint", "/w", "--folder", "f2")
    assert status == 0
    saves = [s for s in grafana.saves if s["dashboard"]["uid"] == "d05"]
    assert len(saves) == 1 and saves[0]["dashboard"]["version"] == 2  # read again after 412
    assert grafana.dashboards["d05"]["dashboard"]["version"] == 3
    assert {s["dashboard"]["uid"] for s in grafana.saves} == {"d02", "d05", "d08", "d11"}


def test_a_dry_run_changes_nothing_and_a_missing_plugin_is_said(
    grafana: FakeGrafana, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = panel_tool(grafana, tmp_path, "install", "--endpoint", "/w", "--dry-run")
    assert status == 0 and "12 would add" in out and not grafana.saves
    grafana.plugins.clear()
    status, _ = panel_tool(grafana, tmp_path, "install", "--endpoint", "/w")
    assert status == 1 and f"plugins install {PLUGIN_ID}" in capsys.readouterr().err


@pytest.mark.parametrize("window", ["0s", "30x", "-5d", ""])
def test_a_window_that_is_no_sensible_duration_is_a_400_naming_it(
    make_app: AppFactory, window: str
) -> None:
    client = falcon.testing.TestClient(make_app(stream=io.StringIO()))
    result = client.simulate_get("/api/dashboards/usage", params={"window": window})
    assert result.status_code == 400 and result.json["error"].startswith("400 Bad Request: window")


def test_a_window_longer_than_anything_kept_means_everything(make_app: AppFactory) -> None:
    client = falcon.testing.TestClient(make_app(stream=io.StringIO()))
    client.simulate_post("/write", body=start("a"))
    result = client.simulate_get("/api/dashboards/usage", params={"window": "9" * 400 + "d"})
    assert result.status_code == 200 and result.json["dashboards"][0]["sessions"] == 1


def test_the_sqlite_ledger_is_shared_by_processes_and_survives_a_restart(tmp_path: Path) -> None:
    stores = [SqliteSessionStore(tmp_path / "sessions.db", max_size=0, idle_ttl=0)
              for _ in range(3)]  # fmt: skip
    one, two = SqliteUsage(stores[0]), SqliteUsage(stores[1])
    one.record("g", "a", "A", NOW, started=True, viewer=b"v")
    two.record("g", "a", "A", NOW + 1, started=True, viewer=b"w")
    stores[0].close()
    stores[1].close()
    (usage,) = SqliteUsage(stores[2]).report(NOW - DAY)
    assert (usage.sessions, usage.viewers, usage.last_view) == (2, 2, NOW + 1)
    stores[2].close()


def _record_and_die(path: str) -> None:
    LmdbUsage(LmdbSessionStore(path, max_size=0, idle_ttl=0)).record(
        "g", "a", "A", NOW, started=True, viewer=b"v"
    )
    os.kill(os.getpid(), signal.SIGKILL)  # before its thread could move the record


def test_the_lmdb_ledger_keeps_a_killed_workers_records_and_applies_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "s")
    child = multiprocessing.get_context("spawn").Process(target=_record_and_die, args=(path,))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    store = LmdbSessionStore(path, max_size=0, idle_ttl=0)
    ledger = LmdbUsage(store)
    ledger.record("g", "a", "A", NOW + 1, started=True, viewer=b"w")
    # A process killed between the SQLite commit and the journal's trim: the records stay in
    # the journal, and the next move must not count them again.
    forget = store.forget_journal
    monkeypatch.setattr(store, "forget_journal", lambda generation, upto: None)
    assert ledger.move() == 2
    monkeypatch.setattr(store, "forget_journal", forget)
    (usage,) = ledger.report(NOW - DAY)
    assert (usage.sessions, usage.viewers, usage.last_view) == (2, 2, NOW + 1)
    assert store.journaled(10)[1] == []  # moved, then trimmed
    ledger.close()
    store.close()


def test_the_lmdb_journal_goes_on_after_a_move_emptied_it(tmp_path: Path) -> None:
    store = LmdbSessionStore(tmp_path / "s", max_size=0, idle_ttl=0)
    ledger = LmdbUsage(store)
    for k in range(3):
        ledger.record("g", "a", "A", NOW + k, started=True, viewer=b"")
    assert ledger.move() == 3 and store.journaled(10)[1] == []
    for k in range(3, 5):  # the seqs must not start again: the ledger remembers the last moved
        ledger.record("g", "a", "A", NOW + k, started=True, viewer=b"")
    assert [seq for seq, _ in store.journaled(10)[1]] == [4, 5]
    assert ledger.move() == 2
    (usage,) = ledger.report(NOW - DAY)
    assert (usage.sessions, usage.last_view) == (5, NOW + 4)
    ledger.close()
    store.close()


def test_the_lmdb_journal_is_bounded_and_keeps_the_newest_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lmdb_module, "MAX_JOURNAL", 100)
    store = LmdbSessionStore(tmp_path / "s", max_size=0, idle_ttl=0)
    for k in range(1, 1001):
        store.journal(b"%d" % k)
    seqs = [seq for seq, _ in store.journaled(10_000)[1]]
    assert 100 <= len(seqs) < 100 + 64  # the size is checked every 64 appends
    assert seqs == list(range(1001 - len(seqs), 1001))
    store.close()


def test_the_lmdb_ledger_moves_its_journal_by_itself_and_follows_a_new_map(
    tmp_path: Path,
) -> None:
    boot = ["boot-1"]
    store = LmdbSessionStore(tmp_path / "s", max_size=0, idle_ttl=0, boot=lambda: boot[0])
    ledger = LmdbUsage(store)
    for k in range(3):
        ledger.record("g", "a", "A", NOW + k, started=True, viewer=b"")
    deadline = time.monotonic() + 10
    while store.journaled(10)[1] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.journaled(10)[1] == []  # the thread moved them, no report asked
    ledger.close()
    store.close()
    boot[0] = "boot-2"  # the host restarted: a new map, whose seqs start again at 1
    store = LmdbSessionStore(tmp_path / "s", max_size=0, idle_ttl=0, boot=lambda: boot[0])
    ledger = LmdbUsage(store)
    ledger.record("g", "a", "A", NOW + 9, started=True, viewer=b"")
    (usage,) = ledger.report(NOW - DAY)
    assert (usage.sessions, usage.last_view) == (4, NOW + 9)  # the ledger itself survived
    ledger.close()
    store.close()


def test_the_command_hands_its_tools_their_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from otel_panel_receiver.cli import main

    assert main(["dashboards", "--url", "ftp://grafana"], {}) == 1
    assert "no http or https URL" in capsys.readouterr().err
    panel = ["panel", "install", "--endpoint", "/w", "--grafana-url", "http://127.0.0.1:9"]
    assert main([*panel, "--grafana-token-file", "/nonexistent"], {}) == 1
    assert "/nonexistent" in capsys.readouterr().err
    token = Path(__file__).parent / "support" / "__init__.py"  # any readable, non-empty file
    assert main([*panel, "--grafana-token-file", str(token)], {}) == 1  # nothing listens there
    err = capsys.readouterr().err
    assert err.startswith("otel-panel-receiver: error:") and "Traceback" not in err
    assert "127.0.0.1" in err


def test_without_an_inventory_the_table_flags_no_dashboard_as_missing_from_it(
    make_app: AppFactory,
) -> None:
    app = make_app(stream=io.StringIO())
    falcon.testing.TestClient(app).simulate_post("/write", body=start("a"))
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = io.StringIO()
        assert run_tool(["dashboards", "--url", f"http://127.0.0.1:{server.server_port}"], out) == 0
    finally:
        server.shutdown()
        server.server_close()
    table = out.getvalue()
    assert "Dashboard a" in table and "not in the inventory" not in table
