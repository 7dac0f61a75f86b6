"""The RSGI front's ``POST /write`` (``buffered.py``'s direct handler) answers as Falcon does.

granian serves the command's ``/write`` without Falcon, through ``WriteEndpoint.rsgi``; every
other embedding goes through the Falcon resource. Here the same requests go to two apps built
alike, one through each door, and the answers and counted outcomes must be the same. The
scope is a stand-in with granian's attributes (``client``, ``headers.get_all``,
``query_string``); the real granian is exercised by the end-to-end tests of the command.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from otel_panel_receiver.config import Settings
from otel_panel_receiver.testing import MemoryTelemetry, sample_payload
from otel_panel_receiver.web import cookie_value
from tests.conftest import AppFactory

START = sample_payload("v2-start.json")
ORIGIN = "https://grafana.example.com"


@dataclass
class _Headers:
    pairs: list[tuple[str, str]]

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]


@dataclass
class _Scope:
    headers: _Headers
    query_string: str = ""
    client: str = "10.0.0.9:50123"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes = START
    headers: tuple[tuple[str, str], ...] = ()
    query: str = "token=s3cret"
    length: int | None = None  # announced length when not the body's
    guarded: bool = True  # tokens, origins and a trusted proxy (else none: anyone may post)


CASES = [
    Case("accepted, token in the query, allowed origin", headers=(("Origin", ORIGIN),)),
    Case("accepted, bearer token", headers=(("Authorization", "Bearer s3cret"),), query=""),
    Case("forbidden origin", headers=(("Origin", "https://evil.example"),)),
    Case("no token", query=""),
    Case("wrong token, allowed origin", query="token=guess", headers=(("Origin", ORIGIN),)),
    Case("malformed JSON", body=b'{"uuid": '),
    Case("wrong type", body=b'{"uuid": "u", "type": "start", "host": 7}'),
    Case("over the limit by its length", body=b"", length=10_000),
    Case("forwarded by a trusted proxy", headers=(("X-Forwarded-For", "203.0.113.5"),)),
    Case("refused, forwarded", headers=(("X-Forwarded-For", "203.0.113.5"),), query=""),
    Case("empty body", body=b""),
]


def _settings(tmp_path: Path) -> Settings:
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret\n")
    return Settings(
        auth="token",
        auth_token_file=str(tokens),
        allowed_origins=ORIGIN,
        trusted_proxies="10.0.0.0/8",
        max_body_size=4096,
        disable_session_log=True,
    )


def _outcomes(telemetry: MemoryTelemetry) -> dict[str, float]:
    return {a["outcome"]: v for a, v in telemetry.points("grafana_analytics_payloads")}


def _comparable(status: int, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
    kept = {k.lower(): v for k, v in headers if k.lower() != "content-length"}
    return status, kept, body


#: With no access control and no trusted proxy, the front hands a body straight to the receiver.
OPEN_CASES = [
    Case("open: accepted", query="", guarded=False),
    Case("open: a forwarded address not believed", headers=(("X-Forwarded-For", "1.2.3.4"),),
         guarded=False),
    Case("open: malformed JSON", body=b'{"uuid": ', query="", guarded=False),
    Case("open: wrong type", body=b'{"uuid": "u", "type": "start", "host": 7}', query="",
         guarded=False),
    Case("open: over the limit by its length", body=b"", length=10_000, query="", guarded=False),
    Case("open: empty body", body=b"", query="", guarded=False),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES + OPEN_CASES, ids=lambda c: c.name)
def test_the_rsgi_front_answers_write_as_falcon_does(
    case: Case, tmp_path: Path, make_app: AppFactory,
    make_telemetry: Any, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    if case.guarded:
        settings = _settings(tmp_path)
    else:
        settings = Settings(max_body_size=4096, disable_session_log=True)
    through_falcon = make_telemetry(settings)
    through_rsgi = make_telemetry(settings)
    falcon_app = make_app(settings, telemetry=through_falcon)
    rsgi_app = make_app(settings, telemetry=through_rsgi)
    length = case.length if case.length is not None else len(case.body)
    headers = [*case.headers, ("Content-Length", str(length))]

    path = "/write" + (f"?{case.query}" if case.query else "")
    answer = falcon.testing.TestClient(falcon_app).simulate_post(
        path, body=case.body, headers=dict(headers), remote_addr="10.0.0.9"
    )
    expected = _comparable(answer.status_code, answer.headers.items(), answer.content)
    logged = _refusals(caplog)
    caplog.clear()

    scope = _Scope(_Headers([(k.lower(), v) for k, v in headers]), query_string=case.query)
    status, got_headers, body = rsgi_app.write.rsgi(scope, case.body, length)  # as the front
    assert _comparable(status, got_headers, body) == expected
    assert _outcomes(through_rsgi) == _outcomes(through_falcon) != {}
    assert _refusals(caplog) == logged  # the same client address, detail and status


def _refusals(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.getMessage() == "Payload refused"]  # type: ignore[attr-defined]


def test_a_body_that_never_arrived_whole_is_a_400_counted_as_unreadable(
    tmp_path: Path, make_app: AppFactory, telemetry: MemoryTelemetry
) -> None:
    app = make_app(Settings(disable_session_log=True), telemetry=telemetry)

    class CutShort(io.RawIOBase):
        def readinto(self, buffer: Any) -> int:
            raise ConnectionError("body cut short: 3 of 900 bytes")

    scope = _Scope(_Headers([("content-length", "900")]))
    status, headers, body = app.write.rsgi(scope, CutShort(), 900)
    assert status == 400 and ("Connection", "close") in headers
    assert b"body could not be read: ConnectionError: body cut short" in body
    assert _outcomes(telemetry) == {"unreadable": 1}


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("grafana_session=abc123", "abc123"),
        ("theme=dark; grafana_session=abc123; other=1", "abc123"),
        ('grafana_session="abc123"', "abc123"),
        ("grafana_session_expiry=1; grafana_session = x ", "x"),
        ("grafana_session=a; grafana_session=b", "a"),
        ("other=1", ""),
        ("", ""),
        ("grafana_session", ""),
    ],
)
def test_the_session_cookie_is_found_as_falcon_finds_it(header: str, value: str) -> None:
    assert cookie_value(header, "grafana_session") == value
    request = falcon.testing.create_req(headers={"Cookie": header} if header else {})
    assert request.cookies.get("grafana_session", "") == value
