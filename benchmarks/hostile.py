"""Measure what hostile clients cost: body shapes, stalled clients, floods of label sets.

* CPU per 64 KiB body of hostile shapes, in process (decode, rules, counters, log line): the
  cost must grow with the body's size, never with the square of a count in it.
* The delay a stalled or trickling client adds to a normal POST, against the real command
  (granian; one worker and two): the delay of a normal client, with 1 stalled connection and
  with 50 slow ones open.
* ``/metrics`` after a flood of new label sets (random names, then 10 KB names) against the
  real command: its size, how long a scrape takes, and that a real session sent afterwards is
  counted in its own series.
"""

from __future__ import annotations

import gc
import http.client
import json
import socket
import statistics
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from benchmarks import targets
from benchmarks.plan import Plan
from benchmarks.report import Table
from benchmarks.servers import REPO
from otel_panel_receiver import Settings, create_app
from otel_panel_receiver.errors import PayloadError
from otel_panel_receiver.testing import sample_payload
from tests.support.procs import VENV_BIN, free_port, running

__all__ = ["run"]

LIMIT = 65_536


def _variables(n: int, name: str = "") -> bytes:
    values = ",".join(['{"name":"%s","values":["v"]}' % name] * n)  # noqa: UP031
    return b'{"uuid":"u","type":"start","time":1,"variables":[%s]}' % values.encode()


def _fill(make: Callable[[int], bytes]) -> bytes:
    """Return ``make(n)`` for the largest ``n`` whose body fits in 64 KiB."""
    low, high = 1, LIMIT
    while low < high:
        mid = (low + high + 1) // 2
        if len(make(mid)) <= LIMIT:
            low = mid
        else:
            high = mid - 1
    return make(low)


#: Body shapes a hostile client may send, each as large as the body limit allows.
SHAPES: dict[str, Callable[[], bytes]] = {
    "variables without names": lambda: _fill(_variables),
    "variables all named 'type'": lambda: _fill(lambda n: _variables(n, "type")),
    "one 64 KiB dashboard name": lambda: _fill(
        lambda n: b'{"uuid":"u","type":"start","time":1,"dashboard":{"name":"%s"}}' % (b"x" * n)
    ),
    "values: many small numbers": lambda: _fill(
        lambda n: (
            b'{"uuid":"u","type":"start","time":1,"variables":[{"name":"a","values":[%s]}]}'
            % ",".join(["1"] * n).encode()
        )
    ),
    "flattened: many indexed keys": lambda: _fill(
        lambda n: json.dumps(
            {"uuid": "u", "type": "start", **{f"variables.{i}.name": "v" for i in range(n)}}
        ).encode()
    ),
    "flattened: one deep key": lambda: _fill(
        lambda n: json.dumps({"uuid": "u", ".".join(["a"] * n): 1}).encode()
    ),
    "nesting as deep as it goes": lambda: _fill(lambda n: b"[" * n),
    "the sample start (normal)": lambda: sample_payload("v2-start.json"),
}


def _body_costs(plan: Plan) -> Table:
    table = Table(
        "Hostile bodies: CPU per 64 KiB body, in process",
        ("body", "bytes", "answer", "median CPU ms", "max CPU ms", "target", "met"),
    )
    app = create_app(Settings(disable_session_log=False, new_series_delay=0))
    repeats = 3 if plan.quick else 10
    gc.collect()
    gc.freeze()  # as the service's entry point does: this process's heap is not the service's
    try:
        for name, make in SHAPES.items():
            body = make()
            cpu: list[float] = []
            answer = "accepted"
            for _ in range(repeats):
                began = time.process_time()
                try:
                    app.receiver.handle(body)
                except PayloadError as exc:
                    answer = f"400: {exc.message[:40]}"
                cpu.append((time.process_time() - began) * 1000)
            median = statistics.median(cpu)
            verdict = table.check(
                f"CPU for a 64 KiB body: {name}", f"{max(cpu):.1f} ms",
                targets.HOSTILE_BODY_CPU_MS, max(cpu),
            )  # fmt: skip
            table.add(name, f"{len(body):,}", answer, f"{median:.1f}", f"{max(cpu):.1f}",
                      targets.HOSTILE_BODY_CPU_MS, verdict)  # fmt: skip
    finally:
        gc.unfreeze()
        app.close()
    table.notes.append(
        f"process CPU time (time.process_time) of Receiver.handle for each body, {repeats} "
        "times, with the per-payload log line rendered (into this process's stdout buffer); "
        "the heap built before is frozen (gc.freeze), as in the service, so the cyclic "
        "collector's full passes cost what the bodies allocate."
    )
    return table


@contextmanager
def _command(*args: str) -> Iterator[int]:
    port = free_port()
    argv = [str(VENV_BIN / "otel-panel-receiver"), "--http-address", f"127.0.0.1:{port}",
            "--disable-session-log", "--new-series-delay", "0", *args]  # fmt: skip
    with running(argv, ready_url=f"http://127.0.0.1:{port}/healthz", env={"PYTHONPATH": str(REPO)}):
        yield port


def _post_ms(port: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    began = time.perf_counter()
    conn.request("POST", "/write", body=sample_payload("v2-heartbeat.json"))
    conn.getresponse().read()
    conn.close()
    return (time.perf_counter() - began) * 1000


def _stalled(port: int, n: int) -> list[socket.socket]:
    starts = (
        b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789",
        b"POST /write HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
        b"POST /wri",
    )
    out = []
    for i in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(starts[i % 3])
        out.append(sock)
    return out


def _stall_delays(plan: Plan) -> Table:
    table = Table(
        "Stalled and slow clients: the delay of a normal POST, real command (granian)",
        ("workers", "clients stalled", "median ms", "max ms", "delay ms", "target", "met"),
    )
    posts = 5 if plan.quick else 20
    for workers in ("1",) if plan.quick else ("1", "2"):
        with _command("--workers", workers) as port:
            alone = statistics.median(_post_ms(port) for _ in range(posts))
            for stalled in (1, 50):
                socks = _stalled(port, stalled)
                try:
                    times = [_post_ms(port) for _ in range(posts)]
                finally:
                    for sock in socks:
                        sock.close()
                delay = max(times) - alone
                verdict = table.check(
                    f"delay by {stalled} stalled clients, {workers} worker(s)", f"{delay:.1f} ms",
                    targets.STALL_DELAY_MS, delay,
                )  # fmt: skip
                median = statistics.median(times)
                table.add(workers, stalled, f"{median:.1f}", f"{max(times):.1f}",
                          f"{delay:.1f}", targets.STALL_DELAY_MS, verdict)  # fmt: skip
    table.notes.append(
        f"{posts} normal POSTs on new connections while the stalled ones stay open (a third "
        "announce 1,000 bytes and send 10, a third send one chunk of a chunked body, a third "
        "half a request line); delay = slowest POST minus the median POST with none stalled."
    )
    return table


def _flood(plan: Plan) -> Table:
    table = Table(
        "A flood of new label sets, real command: /metrics afterwards",
        ("flood", "series shown", "size MiB", "median scrape ms", "max scrape ms",
         "real session counted", "target", "met"),
    )  # fmt: skip
    random_names, long_names = (2_000, 150) if plan.quick else (20_000, 1_500)
    with _command() as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(random_names + long_names):
            name = f"junk-{i}" if i < random_names else "x" * 10_000
            body = json.dumps({
                "uuid": f"{i:08x}-0000-4000-8000-000000000000", "type": "start", "time": 1,
                "dashboard": {"name": name, "uid": f"u{i}"},
            }).encode()  # fmt: skip
            conn.request("POST", "/write", body=body)
            conn.getresponse().read()
        conn.close()
        _post_ms(port)  # a real session's heartbeat: its own label set
        time.sleep(1.5)
        scrapes: list[float] = []
        page = b""
        for _ in range(5):
            began = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
                page = resp.read()
            scrapes.append((time.perf_counter() - began) * 1000)
    lines = page.decode().splitlines()
    shown = sum(line.startswith("grafana_analytics_sessions") for line in lines)
    real = any('dashboard_uid="ZQZXRMXMk"' in line for line in lines)
    verdict = table.check(
        "scrape after the flood", f"{max(scrapes):.0f} ms", targets.FLOOD_SCRAPE_MS, max(scrapes)
    )
    table.add(
        f"{random_names:,} random names + {long_names:,} of 10 KB", f"{shown:,}",
        f"{len(page) / 2**20:.1f}", f"{statistics.median(scrapes):.0f}",
        f"{max(scrapes):.0f}", "yes" if real else "NO", targets.FLOOD_SCRAPE_MS, verdict,
    )  # fmt: skip
    if not real:
        table.problems.append("the real session sent after the flood is not in /metrics")
    table.notes.append(
        "default settings (label values cut at 128 characters, 10,000 label sets per metric); "
        "each flood payload a session on a dashboard of its own; 5 scrapes over HTTP."
    )
    return table


def run(plan: Plan) -> list[Table]:
    """Measure hostile bodies in process, then stalled clients and a flood on the command."""
    with suppress(KeyboardInterrupt):
        return [_body_costs(plan), _stall_delays(plan), _flood(plan)]
    return []
