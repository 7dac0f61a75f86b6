"""Serve a WSGI app over granian's RSGI, with each request read whole before the app runs.

A WSGI server gives a thread to every request from its first byte to its last, so a client that
sends its body slowly, or not at all, holds that thread: with a few such clients nobody else is
served. Here granian's event loop reads each body (at most ``max_body`` + 1 bytes, within
``timeout`` seconds) without any thread, and only then runs the WSGI app, in the loop itself
(``threads`` 0: for an app that never waits, such as the receiver with its memory store) or in
a pool of ``threads`` threads (for one whose store waits on a disk or a network), except for the
``inline`` paths (the liveness probe), which run in the loop at once even while every thread
waits on a frozen store. The app sees a
plain in-memory ``wsgi.input``. A body that does not arrive in time, or cannot be read, reaches
the app as a ``wsgi.input`` that raises, so the app answers it (with a 4xx) and counts it like
any other refusal. granian itself bounds how long a client may take to send its headers.

The deadline of the body reads is kept by one timer (:class:`Deadlines`), not one per request:
``asyncio.timeout()`` schedules and cancels a timer for each (about 7 µs of CPU per request on
the benchmark machine, a quarter of the whole pipeline with the log off). A read ends between
``timeout`` and ``timeout`` + :data:`TICK` seconds after it began.

A ``direct`` handler answers the ``POST`` requests of its path with a known length without the
WSGI app: it gets the scope, the body (the ``bytes`` read as above, or a binary file whose
reading raises why it could not be read) and the announced length, and returns the status,
headers and body (the receiver's ``/write``: no WSGI environ, no framework).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, Protocol

__all__ = ["BufferedRSGI", "Direct", "UnreadableBody"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Answer = tuple[int, list[tuple[str, str]], bytes]
#: ``direct(scope, body, length)``: answer a ``POST`` whose body is read whole (``bytes``, or
#: an :class:`UnreadableBody`), without WSGI.
Direct = Callable[[Any, Any, int], Answer]

_CHUNKED: Final = "chunked"
#: Seconds between two checks of the deadlines of the body reads in progress.
TICK: Final = 0.25


class Deadlines:
    """The body reads in progress and when each must end, checked by one timer of the loop.

    :meth:`enter` notes the current task's deadline (``timeout`` seconds from now), and a timer
    runs every ``tick`` while reads are pending, cancelling the tasks past theirs;
    :meth:`leave` says whether the task's read was cancelled for it. A request costs a
    dictionary entry, not a timer of its own.
    """

    def __init__(self, timeout: float, tick: float = TICK) -> None:
        self._timeout = timeout
        self._tick = min(tick, timeout / 4) if timeout > 0 else tick
        self._pending: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def enter(self) -> asyncio.Task[Any]:
        """Note the current task's deadline; return the task."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a body read's deadline needs a running task")
        self._pending[task] = loop.time() + self._timeout
        if self._timer is None:
            self._timer = loop.call_later(self._tick, self._sweep, loop)
        return task

    def leave(self, task: asyncio.Task[Any]) -> bool:
        """Forget the task's deadline; return whether its read was cancelled for passing it."""
        self._pending.pop(task, None)
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        late = [task for task, deadline in self._pending.items() if deadline <= now]
        for task in late:
            del self._pending[task]
            self._expired.add(task)
            task.cancel()
        self._timer = loop.call_later(self._tick, self._sweep, loop) if self._pending else None


class UnreadableBody(io.RawIOBase):
    """A ``wsgi.input`` for a body that never arrived whole: reading it raises ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self._error = error

    def readable(self) -> bool:
        """A WSGI input is readable."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Raise the reason the body could not be read."""
        raise self._error


class _Scope(Protocol):  # what granian's RSGI scope offers (granian's stubs are not typed)
    proto: str
    method: str
    path: str
    query_string: str
    client: str
    server: str
    scheme: str
    http_version: str
    headers: Any


class BufferedRSGI:
    """An RSGI application that reads each request whole, then runs ``app`` (a WSGI app).

    ``close`` runs when granian stops the worker (``__rsgi_del__``).
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        max_body: int,
        timeout: float,
        threads: int = 0,
        close: Callable[[], None] | None = None,
        inline: frozenset[str] = frozenset(),
        direct: Mapping[str, Direct] | None = None,
    ) -> None:
        self._app = app
        self._inline = inline
        self._direct = dict(direct or {})
        self._max_body = max_body
        self._timeout = timeout
        self._deadlines = Deadlines(timeout)
        self._pool = ThreadPoolExecutor(threads, "otel-panel-receiver") if threads else None
        self._close = close

    async def __call__(self, scope: _Scope, proto: Any) -> None:
        """Answer one request."""
        if scope.proto != "http":
            return
        announced = ", ".join(scope.headers.get_all("content-length"))
        # -1: none, or not a length (two that differ, a sign): the body is read up to the limit.
        length = int(announced) if announced.isascii() and announced.isdigit() else -1
        # The body is read here, not in a coroutine of its own: a request then costs one
        # coroutine, not three (measured: about 2 µs of the loop's CPU per request).
        deadlines = self._deadlines
        task = deadlines.enter()
        try:
            if length > self._max_body:
                body: bytes | io.RawIOBase = b""  # refused from the length alone
            elif length >= 0:  # known and within the limit: read at once
                data: bytes = await proto()
                if len(data) < length:
                    raise ConnectionError(f"body cut short: {len(data)} of {length} bytes")
                body = data
            else:
                body = await self._chunks(proto)
        except (asyncio.CancelledError, Exception) as exc:
            failed = self._failed(exc, task)
            if failed is None:
                return  # the client went away: nobody to answer
            body = failed
        else:
            if deadlines.leave(task):  # cancelled just as it arrived: it arrived, so go on
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0)  # the cancellation lands here, not further on
        if self._pool is None or scope.path in self._inline:
            status, headers_out, content = self._answer(scope, body, length)
        else:
            loop = asyncio.get_running_loop()
            status, headers_out, content = await loop.run_in_executor(
                self._pool, self._answer, scope, body, length
            )
        proto.response_bytes(status, headers_out, content)

    def _answer(self, scope: _Scope, body: Any, length: int) -> Answer:
        """Answer the request: its direct handler, or the WSGI app."""
        direct = self._direct.get(scope.path) if length >= 0 and scope.method == "POST" else None
        if direct is not None:
            return direct(scope, body, length)
        return _run(self._app, _environ(scope, io.BytesIO(body) if type(body) is bytes else body,
                                        length))  # fmt: skip

    def _failed(
        self, exc: asyncio.CancelledError | Exception, task: asyncio.Task[Any]
    ) -> io.RawIOBase | None:
        """Return what the app gets for a read that raised ``exc``: a body that raises why,
        or ``None`` when the client went away; re-raise a cancellation that is not the
        deadline's (granian's own, or the worker stopping)."""
        if isinstance(exc, asyncio.CancelledError):
            if not self._deadlines.leave(task):
                raise exc
            return UnreadableBody(
                TimeoutError(f"the body did not arrive within {self._timeout:g} s")
            )
        self._deadlines.leave(task)  # granian's protocol errors: a bad chunk, a body cut short
        if type(exc).__name__ == "RSGIProtocolClosed":
            return None
        return UnreadableBody(exc)

    async def _chunks(self, proto: Any) -> bytes:
        """Read a body of unknown length, up to one byte past the limit (enough to refuse it)."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in proto:
            chunks.append(chunk)
            size += len(chunk)
            if size > self._max_body:
                break
        return b"".join(chunks)

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Nothing to start: the app was built when the module was imported."""

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the app: its last telemetry goes out before the worker ends."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._close is not None:
            self._close()


def _environ(scope: _Scope, body: io.RawIOBase | io.BytesIO, length: int) -> dict[str, Any]:
    host, _, port = scope.server.rpartition(":")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": scope.path,
        "QUERY_STRING": scope.query_string,
        "SERVER_NAME": host,
        "SERVER_PORT": port,
        "SERVER_PROTOCOL": f"HTTP/{scope.http_version}",
        "REMOTE_ADDR": scope.client.rpartition(":")[0].strip("[]"),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.scheme,
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    headers = scope.headers
    for name in headers.keys():  # noqa: SIM118  # RSGI headers: a mapping without __iter__
        value = ", ".join(headers.get_all(name))
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ[f"HTTP_{key}"] = value
    chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == _CHUNKED
    if length < 0 and not chunked and isinstance(body, io.BytesIO):
        environ["CONTENT_LENGTH"] = str(len(body.getbuffer()))  # what was read
    return environ


def _run(app: WSGIApp, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    answer: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        answer[:] = [int(status.split(" ", 1)[0]), headers]
        return lambda data: None  # the legacy write(): the receiver never calls it

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return answer[0], answer[1], body
