"""The RSGI front's body reads: one timer keeps every read's deadline (``buffered.Deadlines``).

Requests are driven through the front on a real asyncio loop with stand-ins for granian's scope
and protocol object (an awaitable call that returns the body, and ``response_bytes``), the app
a direct handler that keeps the body it was given; the real granian is exercised by the
end-to-end tests of the command (``tests/e2e/test_hostile.py``: a body that never arrives is
answered 408).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from otel_panel_receiver.buffered import BufferedRSGI, UnreadableBody


class Proto:
    """granian's protocol object as the front reads a body of known length: ``await proto()``."""

    def __init__(self, body: bytes, delay: float | None) -> None:
        self.body, self.delay = body, delay
        self.answers: list[int] = []

    async def __call__(self) -> bytes:
        if self.delay is None:
            await asyncio.Event().wait()  # never arrives
        else:
            await asyncio.sleep(self.delay)
        return self.body

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.answers.append(status)


class Headers:
    """granian's RSGI headers: ``get_all`` of a lower-case name."""

    def __init__(self, **headers: str) -> None:
        self._headers = {k.replace("_", "-"): v for k, v in headers.items()}

    def get_all(self, name: str) -> list[str]:
        return [self._headers[name]] if name in self._headers else []


class Scope:
    """granian's RSGI scope of a ``POST /write`` announcing ``length`` bytes."""

    proto, method, path, query_string = "http", "POST", "/write", ""
    client, server, scheme, http_version = "192.0.2.1:40000", "127.0.0.1:8080", "http", "1.1"

    def __init__(self, length: int) -> None:
        self.headers = Headers(content_length=str(length))


class Front:
    """The front around a direct ``/write`` handler that keeps each body it is given."""

    def __init__(self, timeout: float) -> None:
        self.bodies: list[Any] = []
        self.app = BufferedRSGI(
            lambda environ, start: [], max_body=1000, timeout=timeout,
            direct={"/write": self._keep},
        )  # fmt: skip
        self._deadlines = self.app._deadlines

    def _keep(self, scope: Any, body: Any, length: int) -> tuple[int, list[Any], bytes]:
        self.bodies.append(body)
        return 201, [], b""

    async def _read(self, proto: Proto, length: str) -> Any:
        """Send one request through the front; return the body its handler was given."""
        await self.app(Scope(int(length)), proto)
        assert proto.answers == [201]
        return self.bodies[-1]


def front(timeout: float) -> Front:
    return Front(timeout)


def test_a_body_that_never_arrives_is_unreadable_once_its_deadline_passes() -> None:
    app = front(0.4)

    async def main() -> tuple[Any, float, str]:
        started = time.monotonic()
        body = await app._read(Proto(b"x", None), "1")
        took = time.monotonic() - started
        await asyncio.sleep(0.01)  # the task goes on: no cancellation left over
        return body, took, "went on"

    body, took, after = asyncio.run(main())
    assert isinstance(body, UnreadableBody) and after == "went on"
    assert 0.4 <= took < 0.4 + 0.1 + 0.2  # within one check (timeout / 4) of the deadline
    with pytest.raises(TimeoutError, match=r"did not arrive within 0\.4 s"):
        body.read()


def test_bodies_that_arrive_in_time_are_read_and_one_timer_serves_them_all() -> None:
    app = front(5.0)
    timers = []

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        call_at = loop.call_at

        def counted(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            timers.append(args[1])
            return call_at(*args, **kwargs)

        loop.call_at = counted  # type: ignore[method-assign,assignment]
        # 500 reads at once, each body there when asked for (no timer of their own).
        reads = [app._read(Proto(b"%d" % i, 0), "1") for i in range(500)]
        return await asyncio.gather(*reads)

    bodies = asyncio.run(main())
    assert bodies == [b"%d" % i for i in range(500)]
    assert len(timers) == 1  # one deadline check for 500 reads, not a timer per read
    assert app._deadlines._pending == {} and app._deadlines._expired == set()


def test_a_cancellation_that_is_not_the_deadlines_goes_through() -> None:
    app = front(5.0)

    async def main() -> None:
        task = asyncio.create_task(app._read(Proto(b"x", None), "1"))
        await asyncio.sleep(0.05)
        task.cancel()  # granian's, or the worker stopping
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_body_that_arrives_as_its_deadline_passes_is_read_and_the_request_goes_on() -> None:
    app = front(0.0)  # every deadline has passed by the first check

    class JustInTime(Proto):
        """The body is there, and the deadline check cancels the task before it resumes."""

        async def __call__(self) -> bytes:
            app._deadlines._sweep(asyncio.get_running_loop())
            return b"body"

    async def main() -> tuple[Any, str]:
        body = await app._read(JustInTime(b"body", 0), "4")
        await asyncio.sleep(0.01)  # no cancellation left over for the rest of the request
        return body, "went on"

    body, after = asyncio.run(main())
    assert body == b"body" and after == "went on"
