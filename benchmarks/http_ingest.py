"""Measure ``POST /write`` over HTTP: the receiver and a bare Falcon app under the same servers."""

from __future__ import annotations

import os
import re
import statistics
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from benchmarks import targets
from benchmarks.http_rows import Row, load_row, na_load_row, ratio_row, rows, tables
from benchmarks.loadrun import (
    CONNECTIONS,
    Measurement,
    alternate,
    expected_sessions,
    measure,
    quiet,
)
from benchmarks.payloads import Mix, build_mix
from benchmarks.peers import find_redis_server, running_redis
from benchmarks.plan import Plan
from benchmarks.receivers import BARE, receiver_app
from benchmarks.report import Table
from benchmarks.servers import VENV_BIN, AppSpec, ServerSpec
from benchmarks.wrk import INSTALL_HINT, find_wrk
from tests.support.procs import in_ci

__all__ = ["run"]

#: Measured runs at most, on a server with several workers, until one holds not every connection.
_TRIES: Final = 3


def _missing(server: ServerSpec, wrk: str | None) -> str | None:
    """Return why ``server`` cannot be measured here, or ``None``."""
    if wrk is None:
        return f"n/a (wrk not installed; {INSTALL_HINT})"
    if not (VENV_BIN / server.program).exists():
        return f"n/a ({server.program} not installed; pip install -e '.[test]')"
    return None


def _measure_row(row: Row, plan: Plan, wrk: str, round_file: Path, tmp: Path) -> Measurement:
    # With several workers, a run in which one worker holds every connection is made again
    # (not in the smoke, which must stay short).
    tries = _TRIES if row.server.workers > 1 and not plan.quick else 1
    if row.store is None:
        return measure(row.server, BARE, plan, wrk, round_file, tries=tries)
    if row.store == "memory":
        app = receiver_app(row.server, "memory", tmp, log=row.log)
        return measure(row.server, app, plan, wrk, round_file)
    # Named after the row, not random: the command lines in the docs stay the same run to run.
    name = f"{row.server.label} x{row.server.workers} {row.store}".lower()
    directory = tmp / re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    directory.mkdir()  # new: each row starts with an empty store
    if row.store in ("LMDB", "SQLite"):
        app = receiver_app(row.server, row.store, directory)
        return measure(row.server, app, plan, wrk, round_file, tries=tries)
    exe = find_redis_server()
    assert exe is not None  # rows() skipped the row otherwise
    with running_redis(exe) as redis:
        app = receiver_app(row.server, row.store, directory, redis.url)
        return measure(row.server, app, plan, wrk, round_file, peers=(redis.pid,), tries=tries)


def run(plan: Plan) -> list[Table]:
    """Load each server with the receiver, then with the bare app, and compare them."""
    load, ratio = tables()
    wrk = find_wrk()
    planned = rows(plan)
    done: dict[Row, Measurement] = {}
    skipped: dict[Row, str] = {}
    mix = build_mix()
    with tempfile.TemporaryDirectory(prefix="otel-panel-bench-") as tmp:
        round_file = Path(tmp, "round.tsv")
        mix.write_wrk_data(round_file)
        for row in planned:
            why = row.skip or _missing(row.server, wrk)
            if why:
                skipped[row] = why
                na_load_row(load, row, why)
                if why.startswith("n/a"):  # a missing peer fails in CI, as in the tests
                    (load.problems if in_ci() else load.notes).append(f"{row.key}: {why}")
                continue
            assert wrk is not None
            done[row] = m = _measure_row(row, plan, wrk, round_file, Path(tmp))
            load_row(load, row, m)
            load.problems += _answer_problems(row, m, mix)
    for row in planned:
        if row.store is not None:
            bare = next(r for r in planned if r.server == row.server and r.store is None)
            why = skipped.get(row) or skipped.get(bare, "")
            ratio_row(ratio, row, done.get(row), done.get(bare), why)
    go = _go_rows(load, plan, wrk, mix)
    _workers_gain(ratio, planned, done)
    load.notes.extend(_notes(mix, plan, done))
    ratio.notes.append(
        "the key figure: requests/s of the receiver divided by the bare app's on the same server "
        "in the same run. CPU µs/req receiver - bare is what the receiver itself costs per request "
        "on that server (with the Redis store, redis-server's CPU included)."
    )
    tables_out = [load, ratio, _go_table(planned, done, go, plan)]
    if go and wrk is not None:
        tables_out.append(_go_pairs(plan, wrk, mix))
    return tables_out


#: The command's default server, whose figures the targets against Go and for 2 workers use.
DEFAULT_SERVER: Final = ServerSpec("granian")


def _workers_gain(table: Table, planned: list[Row], done: Mapping[Row, Measurement]) -> None:
    """Check the command's default server with 2 workers (default store) against 1 worker."""
    one = done.get(Row(DEFAULT_SERVER, "memory"))
    two_server = ServerSpec(DEFAULT_SERVER.kind, workers=2)
    two = done.get(
        next((r for r in planned if r.server == two_server and r.store), Row(two_server, None))
    )
    what = "command's default (granian) 2 workers ÷ 1 worker"
    if one is None or two is None:
        table.check(what, "not run", targets.WORKERS_GAIN, None)
        return
    gain = two.wrk.rate / one.wrk.rate if one.wrk.rate else 0.0
    table.check(what, f"{gain:.2f}", targets.WORKERS_GAIN, gain)
    note = (
        f"{what}: {two.wrk.rate:,.0f} req/s ({two.app.name}) ÷ {one.wrk.rate:,.0f} req/s "
        f"({one.app.name}) = {gain:.2f}; server CPU per payload {two.cpu_us:.0f} µs with 2 "
        f"workers, {one.cpu_us:.0f} µs with 1."
    )
    bare_one = done.get(Row(DEFAULT_SERVER, None))
    bare_two = done.get(Row(two_server, None))
    if bare_one is not None and bare_two is not None and bare_one.wrk.rate:
        ceiling = bare_two.wrk.rate / bare_one.wrk.rate
        note += (
            f" The ceiling on this machine, the bare app on the same server: "
            f"{bare_two.wrk.rate:,.0f} req/s with 2 workers ÷ {bare_one.wrk.rate:,.0f} with 1 "
            f"= {ceiling:.2f} (wrk and the loopback share the same {os.cpu_count()} cores)."
        )
    table.notes.append(note)


#: The upstream Go receiver as a peer: one process, its session log on (as ours in these rows,
#: to /dev/null) and off.
GO: Final = ServerSpec("upstream-go")


def _go_app(path: str, *, log: bool) -> AppSpec:
    args = () if log else ("--disable-session-log",)
    name = f"upstream Go receiver, session log {'on' if log else 'off'}"
    return AppSpec(name, path, health="/metrics", launcher="binary", args=args, baseline=True)


def _go_rows(load: Table, plan: Plan, wrk: str | None, mix: Mix) -> dict[bool, Measurement]:
    """Load the Go receiver (when ``--go-receiver`` names one) with the same mix and wrk."""
    if not plan.go_receiver or wrk is None:
        return {}
    out: dict[bool, Measurement] = {}
    with tempfile.TemporaryDirectory(prefix="otel-panel-bench-go-") as tmp:
        round_file = Path(tmp, "round.tsv")
        mix.write_wrk_data(round_file)
        for log in (True, False):
            out[log] = m = measure(GO, _go_app(plan.go_receiver, log=log), plan, wrk, round_file)
            load_row(load, Row(GO, None), m)
            if m.wrk.non201 or m.wrk.socket_errors:
                load.problems.append(f"{m.app.name}: {m.wrk.non201} answers other than 201")
    return out


def _go_table(
    planned: list[Row], done: Mapping[Row, Measurement], go: Mapping[bool, Measurement], plan: Plan
) -> Table:
    """Return every measured row as a ratio to the Go receiver, log on (as ours) and off."""
    table = Table(
        "HTTP ingest: ratio to the upstream Go receiver, same load, same run",
        ("server", "workers", "app", "req/s", "÷ Go, log on", "÷ Go, log off", "target", "met"),
    )
    if not go:
        why = "not run: give a build with --go-receiver PATH"
        table.add("(all)", "", "", why, "", "", "", "")
        table.notes.append(
            "the upstream receiver is GPL-licensed and not part of this repository: build it "
            "in a scratch folder from its public source (MacroPower/macropower-analytics-panel, "
            "folder server/) with Debian's golang-go and its golang-github-* library packages "
            "(GO111MODULE=off GOPATH=<scratch>:/usr/share/gocode go build), then pass the binary."
        )
        return table
    for log in (True, False):
        peer = go[log]
        table.add("Go (net/http)", 1, peer.app.name, f"{peer.wrk.rate:,.0f}", "", "", "", "")
    on, off = go[True].wrk.rate, go[False].wrk.rate
    for row in planned:
        if row not in done:
            continue
        m = done[row]
        rate = m.wrk.rate
        target, verdict = "", ""
        if row.store is not None and row.server == DEFAULT_SERVER:  # the command's default
            target = "see below"  # checked on the alternating slices of the next table
        table.add(row.server.label, row.server.workers, m.app.name, f"{rate:,.0f}",
                  f"{rate / on:.2f}" if on else "", f"{rate / off:.2f}" if off else "",
                  target, verdict)  # fmt: skip
        table.figures[f"{row.key}, {m.app.name}: ÷ Go log on"] = rate / on if on else 0.0
    table.notes.append(
        "the Go receiver (the binary given with --go-receiver) loaded exactly like the rows "
        "above (same wrk, "
        "same mix, same machine, same run); ours log every payload to /dev/null in those rows, "
        "so its log-on figure is the like-for-like one. The Go rows run minutes after most of "
        "ours, and this machine's speed drifts that much in minutes: the targets are checked "
        "on the alternating slices of the next table."
    )
    return table


def _go_pairs(plan: Plan, wrk: str, mix: Mix) -> Table:
    """Serve the Go receiver and the command's default side by side, load them in turn for
    ``plan.go_slice_seconds``, ``plan.go_pairs`` times per log setting (more in place of pairs
    that other processes disturbed), and check the median ratio of the undisturbed pairs."""
    table = Table(
        "HTTP ingest: the command's default against the Go receiver, in alternating slices",
        ("session log", "pair", "first", "ours req/s", "Go req/s", "ours ÷ Go",
         "ours CPU µs/req", "Go CPU µs/req", "other load (cores)", "counted", "target",
         "met"),
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="otel-panel-bench-pairs-") as tmp:
        round_file = Path(tmp, "round.tsv")
        mix.write_wrk_data(round_file)
        for log in (True, False):
            setting = "on" if log else "off"
            directory = Path(tmp, setting)
            directory.mkdir()
            apps = [
                (GO, _go_app(plan.go_receiver, log=log)),
                (DEFAULT_SERVER, receiver_app(DEFAULT_SERVER, "memory", directory, log=log)),
            ]
            go_slices, our_slices = alternate(
                apps, plan, wrk, round_file, slices=plan.go_pairs, seconds=plan.go_slice_seconds,
                quiet_cores=plan.go_quiet_cores, extra=plan.go_extra_pairs,
            )  # fmt: skip
            ratios, counted = [], []
            for i, (go, ours) in enumerate(zip(go_slices, our_slices, strict=True)):
                for measured in (go, ours):
                    if measured.wrk.non201 or measured.wrk.socket_errors:
                        table.problems.append(
                            f"pair {i + 1}, session log {setting}: {measured.wrk.non201} answers "
                            f"other than 201 and {measured.wrk.socket_errors} socket errors"
                        )
                ratio = ours.wrk.rate / go.wrk.rate if go.wrk.rate else 0.0
                ratios.append(ratio)
                undisturbed = quiet((go, ours), plan.go_quiet_cores)
                if undisturbed:
                    counted.append(ratio)
                table.add(setting, i + 1, "Go" if i % 2 == 0 else "ours",
                          f"{ours.wrk.rate:,.0f}", f"{go.wrk.rate:,.0f}", f"{ratio:.2f}",
                          f"{ours.cpu_us:.0f}", f"{go.cpu_us:.0f}",
                          f"{ours.others:.2f} / {go.others:.2f}",
                          "yes" if undisturbed else "no: disturbed",
                          "", "")  # fmt: skip
            if len(counted) * 2 < plan.go_pairs:  # too few quiet pairs: every pair, and say so
                table.problems.append(
                    f"session log {setting}: {len(ratios) - len(counted)} of {len(ratios)} pairs "
                    f"had more than {plan.go_quiet_cores:g} cores of other load; the median is "
                    "of every pair"
                )
                counted = ratios
            like = targets.GO_LOG_ON if log else targets.GO_LOG_OFF
            median = statistics.median(counted)
            what = f"command's default (granian x1) ÷ Go, session log {setting}"
            verdict = table.check(what, f"{median:.2f}", like, median)
            table.add(setting, f"median of {len(counted)}", "", "", "", f"{median:.2f}", "", "",
                      "", "", str(like), verdict)  # fmt: skip
    table.notes.append(
        f"the Go receiver and the command's default (granian, one worker, memory store) run "
        f"side by side; each is warmed ({plan.http_warmup_seconds:g} s of wrk), then they are "
        f"loaded in turn, {plan.go_slice_seconds:g} s of wrk each (the same mix and "
        "connections as the HTTP ingest rows, new sessions in every pair), each going first in "
        "half of the pairs; the session log on for both (ours to /dev/null, as the Go "
        "receiver's own) or off for both. The targets take the median ratio of the pairs: this "
        "machine's speed drifts by a fifth over minutes, and a pair measured seconds apart "
        "shares the drift. Other load: the cores other processes used during ours / Go's slice; "
        f"a pair with more than {plan.go_quiet_cores:g} in either slice was disturbed: it is "
        "shown but not counted, and another pair is measured in its place, up to "
        f"{plan.go_extra_pairs} more. With fewer than half the planned pairs undisturbed, the "
        "median is of every pair, and the run says so."
    )
    return table


def _answer_problems(row: Row, m: Measurement, mix: Mix) -> list[str]:
    """Return what makes the row invalid: wrong answers, or sessions counted wrong."""
    problems = []
    if m.wrk.non201 or m.wrk.socket_errors:
        problems.append(
            f"{row.key}, {m.app.name}: {m.wrk.non201} answers other than 201 and "
            f"{m.wrk.socket_errors} socket errors"
        )
    if m.sessions is not None:
        low, high = expected_sessions(mix, m)
        if not low <= m.sessions <= high:
            problems.append(
                f"{row.key}, {m.app.name}: /metrics counted {m.sessions:,.0f} sessions, "
                f"the requests held {low:,} to {high:,}"
            )
    return problems


def _notes(mix: Mix, plan: Plan, done: Mapping[Row, Measurement]) -> Iterable[str]:
    yield (
        f"wrk -t1 -c{CONNECTIONS} -d{plan.http_seconds:g}s -s benchmarks/post.lua, after an "
        f"unmeasured {plan.http_warmup_seconds:g} s run on the same server; bodies are the "
        f"rotating mix ({len(mix.templates):,} payloads a round: {mix.count('start')} sessions "
        "over 2 hosts, 8 dashboards, 40 users, 0-4 variables, 5% flattened; each round new "
        "uuids and later times) posted as text/plain;charset=UTF-8."
    )
    yield (
        "non-201 counts answers other than 201 plus socket errors; server CPU is user + system "
        "time of the server's whole process group (/proc/<pid>/stat) during the measured run, "
        "divided by the requests wrk completed. The receiver's log lines go to /dev/null. "
        "wrk CPU is the client's CPU time over the run: near 100 % the client, not the server, "
        "set the pace, and that row's requests/s is a lower bound. Other load is the CPU the "
        "rest of the machine used meanwhile (/proc/stat busy time minus server, its peers and "
        "wrk): a row with more than a few tenths of a core was disturbed."
    )
    yield (
        "2 workers: the receiver's workers share sessions through LMDB (the default: a new "
        "directory in a temporary directory), SQLite (a new file, WAL mode) or Redis (a "
        "redis-server the harness starts on loopback, no persistence; its CPU is shown as "
        "+ N redis and is part of the ratio table's CPU difference), and /metrics is the "
        "workers' shared table of series (LMDB). On this "
        f"{os.cpu_count()}-core machine wrk takes one core, so the bare app's 2-worker rows "
        "show the ceiling."
    )
    yield (
        "connections per worker: wrk's connections each worker process held half-way through "
        "the measured run (ss -tnp). gunicorn gthread keeps a kept-alive connection on the "
        "worker that accepted it, and wrk opens its 16 at once: often one worker takes them "
        "all and the other idles. Such a run measures one worker, so with 2 workers it is made "
        f"again on new connections, at most {_TRIES} runs; (try N) marks a row measured on "
        "its N-th run, 16+0 one whose every try was so. gunicorn's sync worker closes each "
        "connection after one answer."
    )
    counted = [
        f"{row.key} {m.sessions:,.0f} of {'{:,} to {:,}'.format(*expected_sessions(mix, m))}"
        for row, m in done.items()
        if m.sessions is not None
    ]
    if counted:
        yield (
            "sessions counted: after each receiver run /metrics is read (once the workers' "
            "counts have settled) and must count each session the requests held once, "
            "whichever worker got its events: " + "; ".join(counted) + "."
        )
    for row, m in done.items():
        yield f"{row.server.label} x{row.server.workers}, {m.app.name}: `{m.command}`"
