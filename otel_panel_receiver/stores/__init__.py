"""Session stores: where session states live between a session's events.

Every store keeps packed session states (one ``int`` per session, see ``sessions.pack``) under
a 128-bit session key and offers one operation, an atomic read-modify-write of one key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from otel_panel_receiver.stores.memory import MemorySessionStore
from otel_panel_receiver.stores.redis import RedisSessionStore
from otel_panel_receiver.stores.sqlite import SqliteSessionStore

__all__ = [
    "EvictionCallback",
    "MemorySessionStore",
    "RedisSessionStore",
    "SessionStore",
    "SqliteSessionStore",
    "Update",
    "open_store",
]

R = TypeVar("R")

#: ``fn(old)`` returns the new packed state and a result; ``old`` is ``None`` for a new session.
Update = Callable[[int | None], tuple[int, R]]

#: Called with the key and packed state of each session a store drops for idleness or size.
EvictionCallback = Callable[[int, int], None]


class SessionStore(Protocol):
    """The seam between the session rules and wherever session states are kept."""

    def apply(self, key: int, fn: Update[R]) -> R:
        """Run ``fn`` on the session's state and store what it returns, atomically per key.

        ``fn`` may run more than once (a shared store retries on a concurrent update), so it
        must have no side effects; when it raises, the stored state is left as it was.
        """
        ...

    def __len__(self) -> int:
        """Return the number of sessions held."""
        ...

    def sweep(self) -> int:
        """Drop the sessions idle longer than the store's TTL; return how many were dropped."""
        ...

    def close(self) -> None:
        """Release what the store holds open (connections, files)."""
        ...


from otel_panel_receiver.stores.factory import open_store  # noqa: E402  # needs the protocol above
