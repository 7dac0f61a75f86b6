"""Replaying POSTs to ``/write`` as browsers send them: kept-alive connections, many at once.

A *lane* is a sequence of requests sent one after another, each answered before the next is
sent, so that a session whose events stay in one lane arrives in order.
"""

from __future__ import annotations

import dataclasses
import http.client
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

__all__ = ["Answers", "LaneResult", "post_bodies", "post_lane", "replay_lanes"]

_HEADERS = {"Content-Type": "text/plain;charset=UTF-8"}  # what the panel's no-cors fetch sends
_CONNECTION_ERRORS = (OSError, http.client.HTTPException)


def post_bodies(
    port: int, bodies: Iterable[bytes], *, pace: float = 0.0, path: str = "/write"
) -> list[tuple[int, float]]:
    """POST bodies to ``path`` in order on one keep-alive connection, as the panel does.

    Return each answer's status and latency in seconds; ``pace`` seconds pass between the
    start of one request and the next (0: back to back).
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out: list[tuple[int, float]] = []
    next_at = time.monotonic()
    try:
        for body in bodies:
            if pace:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += pace
            began = time.perf_counter()
            conn.request("POST", path, body=body, headers=_HEADERS)
            resp = conn.getresponse()
            resp.read()
            out.append((resp.status, time.perf_counter() - began))
    finally:
        conn.close()
    return out


class Answers:
    """Count the answers of every lane, so that a test can act after the ``n``-th one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0

    def add(self) -> None:
        """Count one answer."""
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait_for(self, n: int, *, deadline: float = 30.0) -> None:
        """Wait until ``n`` answers have come; raise ``TimeoutError`` at the deadline."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.count >= n, deadline):
                raise TimeoutError(f"only {self.count} of {n} answers within {deadline} s")


@dataclasses.dataclass(slots=True)
class LaneResult:
    """What one lane got: the status of each answered request, in order, and how it ended.

    ``error`` names the connection error that ended the lane early ("" when every request was
    answered); the requests after it were not sent. ``retries`` counts requests sent again.
    """

    statuses: list[int] = dataclasses.field(default_factory=list)
    error: str = ""
    retries: int = 0


def post_lane(
    requests: Sequence[tuple[int, bytes]],
    *,
    spread: int = 1,
    retry: bool = False,
    answers: Answers | None = None,
) -> LaneResult:
    """POST each body to its port on 127.0.0.1, in order, on kept-alive connections.

    The lane keeps ``spread`` connections per port and sends its ``i``-th request on the
    ``i % spread``-th, so that consecutive requests may reach different worker processes (a
    worker serves a kept-alive connection to its end). A connection error (refused, reset,
    closed before the answer) ends the lane, so that a session's later events never overtake
    an earlier one. With ``retry`` the request is first sent once more on a new connection, as
    clients do on a kept-alive connection the server closed; only for traffic in which a
    repeated event adds nothing (a repeated time adds no duration, a known session is not
    counted again).
    """
    conns: dict[tuple[int, int], http.client.HTTPConnection] = {}
    result = LaneResult()
    attempts = 2 if retry else 1
    try:
        for i, (port, body) in enumerate(requests):
            slot = (port, i % spread)
            for attempt in range(attempts):
                if slot not in conns:
                    conns[slot] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                try:
                    conns[slot].request("POST", "/write", body=body, headers=_HEADERS)
                    resp = conns[slot].getresponse()
                    resp.read()
                except _CONNECTION_ERRORS as exc:
                    conns.pop(slot).close()
                    result.error = f"{type(exc).__name__}: {exc}"
                    result.retries += attempt + 1 < attempts
                    continue
                result.error = ""
                result.statuses.append(resp.status)
                if answers is not None:
                    answers.add()
                break
            if result.error:
                break
        return result
    finally:
        for conn in conns.values():
            conn.close()


def replay_lanes(
    lanes: Sequence[Sequence[tuple[int, bytes]]],
    *,
    spread: int = 1,
    retry: bool = False,
    answers: Answers | None = None,
) -> list[LaneResult]:
    """Run :func:`post_lane` for every lane at once, one thread per lane."""
    if not lanes:
        return []
    with ThreadPoolExecutor(len(lanes)) as pool:
        futures = [
            pool.submit(post_lane, lane, spread=spread, retry=retry, answers=answers)
            for lane in lanes
        ]
        return [future.result() for future in futures]
