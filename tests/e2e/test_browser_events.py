"""End to end: a page in headless Chromium sends events to the real command, cross-origin.

The page comes from an origin of its own, which ``--allowed-origins`` lets in. It sends one
batch with ``fetch`` in ``cors`` mode and ``Content-Type: application/json`` (so Chromium makes
a preflight first, which the receiver must grant), reads the JSON answer (readable only with
the CORS grant), and sends a second batch with ``navigator.sendBeacon``, as a page does while it
closes (text/plain, no preflight, no answer to read). The page writes what it read into the DOM.
"""

from __future__ import annotations

import html
import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.browser import run_chromium, serve_page, shut
from tests.support.metrics import VALUES_AT_ONCE, scrape
from tests.support.procs import free_port, require_binary, running

pytestmark = pytest.mark.peers

PAGE_SCRIPT = """
const endpoint = %(endpoint)s;
(async () => {
  let out;
  try {
    const response = await fetch(endpoint, {
      method: 'POST',
      mode: 'cors',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({
        sessionId: 'page-1',
        events: [{name: 'report_opened', props: {report: 'sales'}},
                 {name: 'export_clicked', props: {format: 'csv'}},
                 {props: {nameless: true}}],
      }),
    });
    out = {status: response.status, type: response.type, body: await response.json()};
  } catch (error) {
    out = {error: String(error)};
  }
  const queued = navigator.sendBeacon(endpoint, JSON.stringify({
    sessionId: 'page-1', events: [{name: 'page_closed'}],
  }));
  out.beacon = queued;
  document.getElementById('result').textContent = JSON.stringify(out);
})();
"""


def page(endpoint: str) -> bytes:
    script = PAGE_SCRIPT % {"endpoint": json.dumps(endpoint)}
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>app</title></head>'
        f'<body><pre id="result">pending</pre><script>{script}</script></body></html>'
    ).encode()


def test_a_page_sends_events_with_cors_and_a_beacon(tmp_path: Path) -> None:
    chromium = require_binary("chromium", "apt-get install chromium")
    receiver = require_binary("otel-panel-receiver", "pip install -e '.[test]'")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/v1/events"
    site = serve_page(page(endpoint))
    log = tmp_path / "receiver.log"
    try:
        argv = [receiver, "--http-address", f"127.0.0.1:{port}", "--allowed-origins", site.origin]
        with running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", env=VALUES_AT_ONCE,
                     log=log):  # fmt: skip
            dom = run_chromium(chromium, tmp_path / "profile", f"{site.origin}/")
            found = re.search(r'<pre id="result">(.*?)</pre>', dom, re.DOTALL)
            assert found, dom[-2000:]
            read = json.loads(html.unescape(found.group(1)))
            # The preflight was granted, the batch recorded, and its answer readable.
            assert read["status"] == 202 and read["type"] == "cors", read
            assert read["body"]["accepted"] == 2 and read["body"]["rejected"] == 1
            assert read["body"]["errors"][0]["path"] == "events[2].name"
            assert read["beacon"] is True
            wanted = {"report_opened": 1.0, "export_clicked": 1.0, "page_closed": 1.0}
            deadline = time.monotonic() + 10
            counted: dict[str, float] = {}
            while time.monotonic() < deadline and counted != wanted:  # the beacon is async
                samples = scrape(f"http://127.0.0.1:{port}/metrics",
                                 "grafana_analytics_events_total")  # fmt: skip
                counted = {labels["event"]: value for labels, value in samples}
                time.sleep(0.2)
            assert counted == wanted
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/metrics", timeout=10
            ) as resp:  # the preflight was not a refusal
                assert 'outcome="forbidden_origin"' not in resp.read().decode()
    finally:
        shut(site)
    lines = [line for line in log.read_text().splitlines() if 'msg="Received event"' in line]
    assert len(lines) == 3 and all("session_id=page-1" in line for line in lines)
