"""End to end: the example page reports its metrics to the real command from headless Chromium.

``examples/browser-metrics/page.html`` is served as it is, from an origin of its own, with its
``data-endpoint`` pointed at the receiver, which runs with the example schema beside it and lets
that origin in (``--allowed-origins``). The page throws an error on purpose, then on load posts
the error count, its load time and its open-tabs gauge with ``fetch`` in ``cors`` mode and a
JSON body (a preflight first), and writes the answer it could read into the DOM.
"""

from __future__ import annotations

import html
import json
import re
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.browser import run_chromium, serve_page, shut
from tests.support.metrics import VALUES_AT_ONCE
from tests.support.procs import free_port, require_binary, running

pytestmark = pytest.mark.peers

EXAMPLE = Path(__file__).parents[2] / "examples" / "browser-metrics"


def test_the_example_page_sends_its_metrics_with_cors(tmp_path: Path) -> None:
    chromium = require_binary("chromium", "apt-get install chromium")
    receiver = require_binary("otel-panel-receiver", "pip install -e '.[test]'")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/v1/metrics"
    page = (EXAMPLE / "page.html").read_text()
    page, found = re.subn(r'data-endpoint="[^"]*"', f'data-endpoint="{endpoint}"', page)
    assert found == 1
    site = serve_page(page.encode())
    try:
        argv = [receiver, "--http-address", f"127.0.0.1:{port}", "--allowed-origins",
                site.origin, "--browser-metrics-schema", str(EXAMPLE / "schema.json")]  # fmt: skip
        with running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", env=VALUES_AT_ONCE,
                     log=tmp_path / "receiver.log"):  # fmt: skip
            dom = run_chromium(chromium, tmp_path / "profile", f"{site.origin}/")
            shown = re.search(r'<pre id="result">(.*?)</pre>', dom, re.DOTALL)
            assert shown, dom[-2000:]
            read = json.loads(html.unescape(shown.group(1)))
            # The preflight was granted and the answer readable: every point fit the schema.
            assert read["status"] == 202, read
            assert read["body"] == {"accepted": 3, "rejected": 0}, read
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                text = resp.read().decode()
    finally:
        shut(site)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("frontend_")
    }
    assert samples[("frontend_errors_total", (("kind", "error"), ("page", "home")))] == 1
    assert samples[("frontend_open_tabs", (("page", "home"),))] == 1
    [(labels, count)] = [(k[1], v) for k, v in samples.items()
                         if k[0] == "frontend_page_load_seconds_count"]  # fmt: skip
    assert count == 1 and dict(labels)["page"] == "home"
    assert dict(labels)["connection"] in ("4g", "3g", "2g", "slow-2g", "unknown")
