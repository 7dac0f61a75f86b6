"""Who may write and read: tokens, Grafana sessions, origins and CORS, rate limits, proxies.

Grafana cannot be installed here: ``tests/support/fake_grafana.py`` is a protocol-faithful fake
of ``/api/user`` and ``/api/user/orgs``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import falcon.testing
import pytest

from otel_panel_receiver.access import (
    Access,
    Allowed,
    GrafanaUnavailable,
    Refused,
    RequestFacts,
    TokenFile,
    client_address,
    parse_networks,
)
from otel_panel_receiver.config import Settings
from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.grafana import GrafanaUsers
from otel_panel_receiver.model import Viewer
from otel_panel_receiver.testing import FakeClock, MemoryTelemetry, sample_payload
from tests.conftest import AppFactory
from tests.support.fake_grafana import FakeGrafana

START = sample_payload("v2-start.json")  # the payload says: jdoe, Jane Doe, an editor


def facts(**given: str) -> RequestFacts:
    values = {"method": "POST", "origin": "", "authorization": "", "query_token": "",
              "cookie": "", "client": "203.0.113.7", **given}  # fmt: skip
    return RequestFacts(**values)


def token_file(tmp_path: Path, *tokens: str) -> str:
    path = tmp_path / "tokens"
    path.write_text("# one a line\n" + "\n".join(tokens) + "\n")
    return str(path)


def outcomes(telemetry: MemoryTelemetry) -> dict[str, float]:
    return {a["outcome"]: v for a, v in telemetry.points("grafana_analytics_payloads")}


# -- tokens ---------------------------------------------------------------------------------


def test_a_token_is_accepted_in_the_query_string_or_as_a_bearer(tmp_path: Path) -> None:
    access = Access(mode="token", tokens=TokenFile(token_file(tmp_path, "s3cret")))
    assert access.write(facts(query_token="s3cret")) == Allowed()
    assert access.write(facts(authorization="Bearer s3cret")) == Allowed()
    wrong = access.write(facts(query_token="guess"))
    assert isinstance(wrong, Refused) and (wrong.status, wrong.outcome) == (401, "unauthorized")
    assert "a wrong token" in wrong.message
    none = access.write(facts())
    assert isinstance(none, Refused) and "no token" in none.message


def test_tokens_rotate_without_a_restart(tmp_path: Path) -> None:
    clock = FakeClock(0.0)
    path = token_file(tmp_path, "old")
    tokens = TokenFile(path, clock=clock)
    assert tokens.accepts("old") and not tokens.accepts("new")
    Path(path).write_text("old\nnew\n")  # both, while the panels move over
    os.utime(path, (1, 1))  # a new modification time, whatever the clock's resolution
    clock.advance(1.0)
    assert tokens.accepts("old") and tokens.accepts("new")
    Path(path).write_text("new\n")
    os.utime(path, (2, 2))
    clock.advance(1.0)
    assert not tokens.accepts("old") and tokens.accepts("new")


def test_a_token_file_that_cannot_work_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the token file"):
        TokenFile(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="holds no token"):
        TokenFile(token_file(tmp_path))
    with pytest.raises(ConfigError, match="--auth token needs --auth-token-file"):
        Access(mode="token")


def test_with_token_auth_a_stranger_gets_401_and_the_refusal_is_counted(
    tmp_path: Path, make_app: AppFactory, telemetry: MemoryTelemetry
) -> None:
    settings = Settings(auth="token", auth_token_file=token_file(tmp_path, "s3cret"))
    client = falcon.testing.TestClient(make_app(settings, telemetry=telemetry))
    refused = client.simulate_post("/write", body=START)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.json["error"].startswith("no token")
    assert client.simulate_post("/write", body=START, params={"token": "s3cret"}).status_code == 201
    assert outcomes(telemetry) == {"unauthorized": 1, "accepted": 1}


def test_metrics_can_need_a_token_of_its_own(tmp_path: Path, make_app: AppFactory) -> None:
    settings = Settings(metrics_token_file=token_file(tmp_path, "scraper"))
    client = falcon.testing.TestClient(make_app(settings))
    assert client.simulate_get("/metrics").status_code == 401
    ok = client.simulate_get("/metrics", headers={"Authorization": "Bearer scraper"})
    assert ok.status_code == 200 and "grafana_analytics_up" in ok.text
    assert client.simulate_post("/write", body=START).status_code == 201  # /write stays open


# -- origins and CORS -----------------------------------------------------------------------


def test_a_foreign_origin_gets_403_and_an_allowed_one_a_cors_grant(
    make_app: AppFactory, telemetry: MemoryTelemetry
) -> None:
    settings = Settings(allowed_origins="https://grafana.example.com")
    client = falcon.testing.TestClient(make_app(settings, telemetry=telemetry))
    evil = client.simulate_post("/write", body=START, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403
    assert "origin 'https://evil.example' is not allowed" in evil.json["error"]
    good = client.simulate_post(
        "/write", body=START, headers={"Origin": "https://grafana.example.com"}
    )
    assert good.status_code == 201
    assert good.headers["Access-Control-Allow-Origin"] == "https://grafana.example.com"
    assert "Origin" in good.headers["Vary"]
    assert client.simulate_post("/write", body=START).status_code == 201  # no Origin: not a browser
    assert outcomes(telemetry) == {"forbidden_origin": 1, "accepted": 2}


def test_a_preflight_from_an_allowed_origin_is_granted_and_from_others_not(
    make_app: AppFactory,
) -> None:
    client = falcon.testing.TestClient(make_app(Settings(allowed_origins="https://g.example")))
    ok = client.simulate_options("/write", headers={
        "Origin": "https://g.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    })  # fmt: skip
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == "https://g.example"
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    other = client.simulate_options("/write", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


# -- rate limit and proxies -------------------------------------------------------------------


def test_a_client_past_the_rate_limit_gets_429_others_go_on(
    make_app: AppFactory, telemetry: MemoryTelemetry
) -> None:
    client = falcon.testing.TestClient(
        make_app(Settings(rate_limit="3/minute"), telemetry=telemetry)
    )
    statuses = [
        client.simulate_post("/write", body=START, remote_addr="198.51.100.1").status_code
        for _ in range(5)
    ]
    assert statuses == [201, 201, 201, 429, 429]
    assert client.simulate_post("/write", body=START, remote_addr="198.51.100.2").status_code == 201
    assert outcomes(telemetry)["rate_limited"] == 2


def test_forwarded_addresses_are_believed_only_from_trusted_proxies() -> None:
    trusted = parse_networks("10.0.0.0/8, 192.0.2.1")
    assert client_address("10.1.2.3", "203.0.113.9, 10.0.0.5", trusted) == "203.0.113.9"
    assert client_address("192.0.2.1", "1.1.1.1, 203.0.113.9", trusted) == "203.0.113.9"
    assert client_address("198.51.100.4", "203.0.113.9", trusted) == "198.51.100.4"  # not a proxy
    assert client_address("10.1.2.3", "", trusted) == "10.1.2.3"
    assert client_address("10.1.2.3", "203.0.113.9", ()) == "10.1.2.3"
    assert ipaddress.ip_network("10.0.0.0/8") in trusted
    with pytest.raises(ConfigError, match="--trusted-proxies"):
        parse_networks("10.0.0.0/33")


def test_a_bad_rate_limit_is_a_config_error(make_app: AppFactory) -> None:
    with pytest.raises(ConfigError, match="--rate-limit"):
        make_app(Settings(rate_limit="lots"))


# -- Grafana sessions -------------------------------------------------------------------------


class Sessions:
    """A ``SessionCheck`` that counts its calls, for the cache's tests."""

    def __init__(self, answer: Viewer | Exception | None) -> None:
        self.answer = answer
        self.calls = 0

    def viewer(self, cookie: str) -> Viewer | None:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


COOKIE = "grafana-session-cookie-value"


def test_grafanas_verdict_is_kept_for_the_ttl_under_a_hash_of_the_cookie() -> None:
    # A cookie no repr of hash bytes can contain ("c1" is also the escape \xc1): the check
    # below must not depend on the digest.
    clock, sessions = FakeClock(0.0), Sessions(Viewer(login="jdoe"))
    access = Access(mode="grafana", sessions=sessions, cache_ttl=30, clock=clock)
    assert access.write(facts(cookie=COOKIE)) == Allowed(Viewer(login="jdoe"))
    access.write(facts(cookie=COOKIE))
    assert sessions.calls == 1
    clock.advance(30)  # the verdict expired: asked again
    access.write(facts(cookie=COOKIE))
    assert sessions.calls == 2
    assert COOKIE not in repr(access.__dict__)  # the cookie itself is kept nowhere


def test_without_a_valid_session_or_with_grafana_down_nothing_is_written() -> None:
    refused = Access(mode="grafana", sessions=Sessions(None)).write(facts(cookie="bad"))
    assert isinstance(refused, Refused) and refused.status == 401
    missing = Access(mode="grafana", sessions=Sessions(None)).write(facts())
    assert isinstance(missing, Refused) and "no Grafana session" in missing.message
    down = Access(mode="grafana", sessions=Sessions(GrafanaUnavailable("timeout")))
    refused = down.write(facts(cookie="c"))
    assert isinstance(refused, Refused) and (refused.status, refused.outcome) == (
        503, "grafana_unavailable",
    )  # fmt: skip


def test_grafana_mode_counts_the_viewer_grafana_names_not_the_one_the_payload_claims(
    make_app: AppFactory, telemetry: MemoryTelemetry
) -> None:
    with FakeGrafana() as grafana:
        grafana.sign_in("cookie-of-jdoe", "jdoe", name="Jane Doe", role="Viewer")
        settings = Settings(auth="grafana", grafana_url=grafana.url)
        client = falcon.testing.TestClient(make_app(settings, telemetry=telemetry))
        forged = START.replace(b'"login": "jdoe"', b'"login": "admin"').replace(
            b'"isGrafanaAdmin": false', b'"isGrafanaAdmin": true'
        )
        answer = client.simulate_post(
            "/write", body=forged, headers={"Cookie": "grafana_session=cookie-of-jdoe"}
        )
        assert answer.status_code == 201
        [(labels, _)] = telemetry.points("grafana_analytics_sessions")
        assert (labels["user_login"], labels["user_role"]) == ("jdoe", "user")  # Grafana's word
        assert labels["user_theme"] == "dark"  # the browser's own settings are kept
        wrong = client.simulate_post(
            "/write", body=START, headers={"Cookie": "grafana_session=stolen"}
        )
        assert wrong.status_code == 401
        grafana.down = True
        down = client.simulate_post(
            "/write", body=START, headers={"Cookie": "grafana_session=someone-new"}
        )
        assert down.status_code == 503 and down.headers["Retry-After"] == "5"
    assert outcomes(telemetry) == {"accepted": 1, "unauthorized": 1, "grafana_unavailable": 1}


def test_the_grafana_client_reads_the_org_role_and_the_admin_flag() -> None:
    with FakeGrafana() as grafana:
        grafana.sign_in("c", "ops", name="Ops", admin=True, role="Editor")
        viewer = GrafanaUsers(grafana.url).viewer("c")
        assert viewer is not None
        assert (viewer.login, viewer.name, viewer.org_role, viewer.role) == (
            "ops", "Ops", "Editor", "admin",
        )  # fmt: skip
        assert GrafanaUsers(grafana.url).viewer("nobody") is None
    with pytest.raises(GrafanaUnavailable):
        GrafanaUsers(grafana.url, timeout=0.5).viewer("c")  # the server is gone


def test_access_is_open_only_without_auth_origins_or_a_rate_limit(tmp_path: Path) -> None:
    # An open Access lets the write endpoint skip gathering the request's facts.
    assert Access().open
    assert not Access(allowed_origins=["https://grafana.example.com"]).open
    assert not Access(limit=lambda client: True).open
    assert not Access(mode="token", tokens=TokenFile(token_file(tmp_path, "s3cret"))).open
