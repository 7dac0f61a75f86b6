"""End to end: hostile clients against the real command (granian, one worker and two), and
against the documented gunicorn deployment (gunicorn behind the example nginx configuration).

Stalled and trickling clients must not delay anybody else, a body that never arrives is
answered 408 once ``--client-timeout`` is over, broken transfer encodings get a 4xx, and no
request gets a 5xx. Each refusal is counted in ``grafana_analytics_payloads_total``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_panel_receiver.testing import sample_payload
from tests.support.metrics import scrape
from tests.support.procs import REPO, free_port, require_binary, running

pytestmark = pytest.mark.peers

STALLED = 50
#: The POSTs of normal clients wait at most this long: a blocked server fails the test.
PATIENCE = 3.0
CLIENT_TIMEOUT = 2
CHUNKED = b"POST /write HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
NGINX_SITE = REPO / "examples" / "nginx" / "otel-panel-receiver.conf"


@contextlib.contextmanager
def receiver(tmp_path: Path, *args: str) -> Iterator[int]:
    """Run the command with ``args`` on a free port for the block; yield the port."""
    binary = require_binary("otel-panel-receiver", "pip install -e '.[test]'")
    port = free_port()
    argv = [binary, "--http-address", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data"),
            "--disable-session-log", "--client-timeout", f"{CLIENT_TIMEOUT}s",
            "--new-series-delay", "0", *args]  # fmt: skip
    with running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", log=tmp_path / "log"):
        yield port


@contextlib.contextmanager
def gunicorn_behind_nginx(tmp_path: Path) -> Iterator[int]:
    """Run the command with gunicorn behind nginx and the example site; yield nginx's port."""
    binary = require_binary("otel-panel-receiver", "pip install -e '.[test]'")
    nginx = require_binary("nginx", "apt-get install nginx (scripts/install-peers.sh)")
    backend, front = free_port(), free_port()
    site = NGINX_SITE.read_text()
    assert "server 127.0.0.1:8080;" in site and "listen 8081;" in site
    site = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{backend};")
    site = site.replace("listen 8081;", f"listen 127.0.0.1:{front};")
    run = tmp_path / "nginx"
    run.mkdir()
    (run / "site.conf").write_text(site)
    temp = " ".join(f"{kind}_temp_path {run / kind};" for kind in (
        "client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    (run / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")  # else nginx's workers run as nobody
        + f"daemon off; worker_processes 1; pid {run / 'nginx.pid'};\n"
        + "events { worker_connections 1024; }\n"
        + f"http {{ access_log off; {temp} include {run / 'site.conf'}; }}\n"
    )
    argv = [binary, "--server", "gunicorn", "--http-address", f"127.0.0.1:{backend}",
            "--data-dir", str(tmp_path / "data"), "--disable-session-log",
            "--trusted-proxies", "127.0.0.1", "--new-series-delay", "0"]  # fmt: skip
    front_argv = [nginx, "-p", str(run), "-e", str(run / "error.log"),
                  "-c", str(run / "nginx.conf")]  # fmt: skip
    with (
        running(argv, ready_url=f"http://127.0.0.1:{backend}/healthz", log=tmp_path / "log"),
        running(front_argv, ready_url=f"http://127.0.0.1:{front}/healthz", log=run / "out"),
    ):
        yield front


def stalled_connections(port: int, n: int) -> list[socket.socket]:
    """Open ``n`` connections that each stop half-way through a request, three ways."""
    starts = (
        b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789",
        b"POST /write HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
        b"POST /wri",  # the request line itself, a byte at a time, then nothing
    )
    out = []
    for i in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(starts[i % len(starts)])
        out.append(sock)
    return out


def post(port: int, body: bytes) -> int:
    """POST ``body`` as the panel does; fail if the answer takes longer than ``PATIENCE``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE)
    try:
        conn.request("POST", "/write", body=body, headers={"Content-Type": "text/plain"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def raw(port: int, request: bytes) -> int:
    """Send a raw request and return the answer's status (0 when the server closed at once)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        head = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(head.split()[1]) if head else 0


def outcomes(port: int) -> dict[str, float]:
    samples = scrape(f"http://127.0.0.1:{port}/metrics", "grafana_analytics_payloads_total")
    return {labels["outcome"]: value for labels, value in samples}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_stalled_and_trickling_clients_delay_nobody(tmp_path: Path, workers: str) -> None:
    # The command's default server; with --server gunicorn this test fails (docs/deployment.md).
    with receiver(tmp_path, "--workers", workers) as port:
        socks = stalled_connections(port, STALLED)
        try:
            started = time.monotonic()
            assert [post(port, sample_payload("v2-start.json")) for _ in range(5)] == [201] * 5
            assert time.monotonic() - started < PATIENCE  # all five, while 50 are stalled
        finally:
            for sock in socks:
                sock.close()


def test_gunicorn_behind_the_example_nginx_is_delayed_by_nobody_and_never_answers_5xx(
    tmp_path: Path,
) -> None:
    # gunicorn alone gives a thread to each stalled client and fails this (docs/deployment.md).
    with gunicorn_behind_nginx(tmp_path) as port:
        socks = stalled_connections(port, STALLED)
        try:
            started = time.monotonic()
            assert [post(port, sample_payload("v2-start.json")) for _ in range(5)] == [201] * 5
            assert time.monotonic() - started < PATIENCE
            for request_bytes in BROKEN.values():
                status = raw(port, request_bytes)
                assert status == 0 or 400 <= status < 500, (request_bytes, status)
            assert post(port, b"x" * 70_000) == 413  # nginx's client_max_body_size
            assert post(port, sample_payload("v2-end.json")) == 201
        finally:
            for sock in socks:
                sock.close()


def test_a_body_that_never_arrives_is_answered_408_and_counted(tmp_path: Path) -> None:
    with receiver(tmp_path) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"did not arrive within 2 s" in answer
        assert outcomes(port)["timed_out"] == 1


BROKEN = {
    "bad-chunk-size": CHUNKED + b"zz\r\nabc\r\n0\r\n\r\n",
    "missing-chunk-crlf": CHUNKED + b"3\r\nabcX\r\n0\r\n\r\n",
    "bad-length": b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",
    "two-lengths": (
        b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    ),
    "bad-header": b"POST /write HTTP/1.1\r\n\x00bad header\r\n\r\n",
    "junk": b"GARBAGE\r\n\r\n",
}  # fmt: skip


@pytest.mark.parametrize("request_bytes", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_request_gets_a_4xx_or_is_closed_never_a_5xx(
    tmp_path: Path, request_bytes: bytes
) -> None:
    with receiver(tmp_path) as port:
        status = raw(port, request_bytes)
        assert status == 0 or 400 <= status < 500, status
        assert post(port, sample_payload("v2-start.json")) == 201  # and the server goes on


def flood_body(i: int, label: str) -> bytes:
    """A payload of a session of its own on a dashboard of its own, its name ``label``."""
    return (
        b'{"uuid":"%08x-0000-4000-8000-000000000000","type":"start","time":1700000000,'
        b'"host":{"hostname":"grafana.example.com"},"dashboard":{"name":"%s","uid":"u%d"}}'
        % (i, label.encode(), i)
    )


def test_a_flood_of_new_label_sets_keeps_metrics_bounded_and_real_traffic_counted(
    tmp_path: Path,
) -> None:
    limit = 2000
    with receiver(tmp_path, "--metric-cardinality-limit", str(limit)) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for i in range(20_000):  # random names
            conn.request("POST", "/write", body=flood_body(i, f"junk-{i}"))
            assert conn.getresponse().read() == b""
        for i in range(20_000, 21_500):  # 10 KB labels
            conn.request("POST", "/write", body=flood_body(i, "x" * 10_000))
            assert conn.getresponse().read() == b""
        conn.close()
        assert post(port, sample_payload("v2-start.json")) == 201  # a real session, after
        time.sleep(1.5)  # the series table takes the last counts each second
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            page = resp.read()
        retired = scrape(
            f"http://127.0.0.1:{port}/metrics", "grafana_analytics_series_retired_total"
        )
    sessions = [
        line for line in page.decode().splitlines()
        if line.startswith("grafana_analytics_sessions_total{")
    ]  # fmt: skip
    assert len(sessions) <= limit
    assert len(page) < limit * 2 * 2_000  # two counters of at most 2 KB a series at 128 chars
    real = [line for line in sessions if 'dashboard_uid="ZQZXRMXMk"' in line]
    assert len(real) == 1 and real[0].endswith(" 1.0")  # its own series, counted
    assert max(len(line) for line in sessions) < 2_000  # 10 KB names cut to 128 characters
    assert {labels["metric"]: value for labels, value in retired}["grafana_analytics_sessions"] > 0
