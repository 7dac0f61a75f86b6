"""End to end: a real headless Chromium sends the plugin's exact request to the receiver.

The page comes from another origin than the receiver (a small ``http.server`` on its own port), so
its ``fetch`` is the cross-origin ``no-cors`` keepalive POST that the panel makes (docs/protocol.md,
"Transport"). The page sends one session's ``start`` and ``end`` to the receiver's ``/write``, and
each body a second time, with the same code, to a recording handler on a third origin: what that
handler sees is what the receiver was sent. Chromium runs with ``--dump-dom``; the page writes its
fetch outcomes into the DOM, and ``--virtual-time-budget`` keeps Chromium from dumping it while a
fetch is still under way.
"""

from __future__ import annotations

import html
import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.browser import run_chromium, serve, serve_page, shut
from tests.support.metrics import VALUES_AT_ONCE
from tests.support.oracle import LABELS, expected_counters
from tests.support.procs import free_port, require_binary, running
from tests.support.traffic import SITES, USERS, Event, start_and_end

#: The plugin's request (macropower-analytics-panel 2.1.0), sent for every payload.
PAGE_SCRIPT = """
const endpoint = %(endpoint)s;
const recorder = %(recorder)s;
const payloads = %(payloads)s;
function send(url, payload) {
  return fetch(url, {
    method: 'POST',
    mode: 'no-cors',
    keepalive: true,
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify(payload),
  });
}
(async () => {
  const out = [];
  try {
    for (const payload of payloads) {
      for (const url of [endpoint, recorder]) {
        const response = await send(url, payload);
        out.push(`${response.type}:${response.status}`);
      }
    }
  } catch (error) {
    out.push(`error:${error}`);
  }
  document.getElementById('result').textContent = JSON.stringify(out);
})();
"""

SESSION_SECONDS = 185


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request the recording handler received."""

    method: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class BrowserRun:
    """What the page reported, what the recorder saw, and the receiver's metrics afterwards."""

    events: list[Event]
    page_origin: str
    outcomes: list[str]
    recorded: list[Recorded]
    metrics: str


def _page(endpoint: str, recorder: str, events: list[Event]) -> bytes:
    def literal(value: Any) -> str:  # safe inside <script>
        return json.dumps(value).replace("</", "<\\/")

    script = PAGE_SCRIPT % {
        "endpoint": literal(endpoint),
        "recorder": literal(recorder),
        "payloads": literal([e.body for e in events]),
    }
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>panel</title></head>'
        f'<body><pre id="result">pending</pre><script>{script}</script></body></html>'
    ).encode()


class _RecordingHandler(BaseHTTPRequestHandler):
    seen: ClassVar[list[Recorded]] = []

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.seen.append(Recorded(self.command, dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    do_POST = _record
    do_OPTIONS = _record  # a preflight would be recorded too (there must be none)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def browser_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserRun]:
    """Serve the page, let Chromium run it against the receiver, collect what happened."""
    chromium = require_binary("chromium", "apt-get install chromium")
    receiver = require_binary("otel-panel-receiver", "pip install -e '.[test]'")
    tmp = tmp_path_factory.mktemp("e2e-browser")
    site = next(s for s in SITES if not s.options["postHeartbeat"] and s.options["postStart"])
    events = start_and_end(site, USERS[3], 1_618_803_734, SESSION_SECONDS, seed=7)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/write"
    _RecordingHandler.seen = []
    recorder = serve(_RecordingHandler)
    page = serve_page(_page(endpoint, f"{recorder.origin}/record", events))
    try:
        with running(
            [receiver, "--http-address", f"127.0.0.1:{port}"],
            ready_url=f"http://127.0.0.1:{port}/healthz",
            env=VALUES_AT_ONCE,
            log=tmp / "receiver.log",
        ):
            dom = run_chromium(chromium, tmp / "profile", f"{page.origin}/")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                metrics = resp.read().decode()
    finally:
        shut(page)
        shut(recorder)
    found = re.search(r'<pre id="result">(.*?)</pre>', dom, re.DOTALL)
    assert found, dom[-2000:]
    text = html.unescape(found.group(1))
    assert text != "pending", "Chromium dumped the page before its fetches settled"
    outcomes = json.loads(text)
    yield BrowserRun(events, page.origin, outcomes, list(_RecordingHandler.seen), metrics)


def _series(metrics: str, name: str) -> dict[tuple[str, ...], float]:
    out = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == name:
                assert set(sample.labels) == set(LABELS), sample.labels
                out[tuple(sample.labels.get(k, "") for k in LABELS)] = sample.value
    return out


@pytest.mark.peers
def test_every_fetch_resolves_as_an_opaque_no_cors_response(browser_run: BrowserRun) -> None:
    """Each cross-origin fetch resolves (type opaque, status 0: what the panel takes as sent)."""
    assert browser_run.outcomes == ["opaque:0"] * 4


@pytest.mark.peers
def test_chromium_sends_the_plugin_body_as_text_plain_without_preflight(
    browser_run: BrowserRun,
) -> None:
    """The browser drops Content-Type: application/json; the body goes out as text/plain."""
    seen = browser_run.recorded
    assert [r.method for r in seen] == ["POST", "POST"]  # no OPTIONS preflight
    for recorded, event in zip(seen, browser_run.events, strict=True):
        headers = {k.lower(): v for k, v in recorded.headers.items()}
        assert headers["content-type"] == "text/plain;charset=UTF-8"
        assert headers["origin"] == browser_run.page_origin  # a cross-origin request
        assert headers["sec-fetch-mode"] == "no-cors"
        assert recorded.body == event.encode()  # JSON.stringify: compact, as generated


@pytest.mark.peers
def test_receiver_counts_the_browser_session_and_its_duration(browser_run: BrowserRun) -> None:
    """The start and end from the browser make one session of end - start seconds."""
    expected = expected_counters(e.body for e in browser_run.events)
    assert list(expected.durations.values()) == [SESSION_SECONDS]
    assert _series(browser_run.metrics, "grafana_analytics_sessions_total") == expected.sessions
    duration = _series(browser_run.metrics, "grafana_analytics_sessions_duration_seconds_total")
    assert duration == expected.durations
