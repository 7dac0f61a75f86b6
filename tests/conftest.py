"""Fixtures shared by the tests: a fake clock, in-memory telemetry, apps that are always closed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import IO, Protocol

import falcon.testing
import pytest

from otel_panel_receiver.app import ReceiverApp, create_app
from otel_panel_receiver.config import Settings
from otel_panel_receiver.export import Telemetry
from otel_panel_receiver.stores import SessionStore
from otel_panel_receiver.testing import FakeClock, MemoryTelemetry, in_memory_telemetry

#: Where the fake clock starts: wall-clock-like, since the shared stores keep unix times.
CLOCK_START = 1_700_000_000.0


class AppFactory(Protocol):
    """Build a receiver app as ``create_app`` does; the fixture closes it after the test."""

    def __call__(
        self,
        settings: Settings | None = None,
        *,
        store: SessionStore | None = None,
        telemetry: Telemetry | None = None,
        environ: Mapping[str, str] | None = None,
        stream: IO[str] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> ReceiverApp: ...


@pytest.fixture
def clock() -> FakeClock:
    """Return a clock that stands still until the test moves it."""
    return FakeClock(CLOCK_START)


@pytest.fixture
def make_telemetry() -> Iterator[Callable[[Settings], MemoryTelemetry]]:
    """Return a maker of in-memory telemetry for given settings; each is shut down after."""
    made: list[MemoryTelemetry] = []

    def make(settings: Settings) -> MemoryTelemetry:
        made.append(in_memory_telemetry(settings))
        return made[-1]

    yield make
    for telemetry in made:
        telemetry.shutdown()


@pytest.fixture
def telemetry(make_telemetry: Callable[[Settings], MemoryTelemetry]) -> MemoryTelemetry:
    """Return in-memory telemetry for the default settings, shut down after the test."""
    return make_telemetry(Settings())


@pytest.fixture
def make_app(make_telemetry: Callable[[Settings], MemoryTelemetry]) -> Iterator[AppFactory]:
    """Return a maker of receiver apps; every app it made is closed after the test.

    Unless ``environ`` is given, the app reads no ``OTEL_*`` variable of the process: a test
    does not push to a collector because the shell that runs it names one.
    """
    # make_telemetry is set up first, so torn down last: an app closes (writing its open
    # session spans) before the telemetry it records into is shut down.
    apps: list[ReceiverApp] = []

    def make(
        settings: Settings | None = None,
        *,
        store: SessionStore | None = None,
        telemetry: Telemetry | None = None,
        environ: Mapping[str, str] | None = None,
        stream: IO[str] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> ReceiverApp:
        environ = {} if environ is None else environ
        app = create_app(
            settings, store=store, telemetry=telemetry, environ=environ, stream=stream,
            **({} if clock is None else {"clock": clock}),
        )  # fmt: skip
        apps.append(app)
        return app

    yield make
    for app in reversed(apps):
        app.close()


@pytest.fixture
def app(make_app: AppFactory, telemetry: MemoryTelemetry) -> ReceiverApp:
    """Return a receiver app with the default settings, recording into ``telemetry``."""
    return make_app(telemetry=telemetry)


@pytest.fixture
def client(app: ReceiverApp) -> falcon.testing.TestClient:
    """Return a ``falcon.testing`` client of ``app``."""
    return falcon.testing.TestClient(app)
