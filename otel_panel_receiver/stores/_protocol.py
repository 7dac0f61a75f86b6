"""The seam between the session rules and wherever session states are kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

__all__ = ["EvictionCallback", "R", "SessionStore", "Update"]

R = TypeVar("R")

#: ``fn(old)`` returns the new packed state and a result; ``old`` is ``None`` for a new session.
Update = Callable[[int | None], tuple[int, R]]

#: Called with the key and packed state of each session a store drops for idleness or size.
EvictionCallback = Callable[[int, int], None]


class SessionStore(Protocol):
    """Packed session states (one ``int`` each) under 128-bit keys, updated atomically per key.

    A call the backend cannot serve now (a file that cannot be written, a full disk, a server
    gone or slower than the store's timeout) raises ``errors.StoreUnavailable``, with nothing
    changed; the store serves again as soon as its backend does.
    """

    def apply(self, key: int, fn: Update[R]) -> R:
        """Run ``fn`` on the session's state and store what it returns, atomically per key.

        ``fn`` may run more than once (a shared store retries on a concurrent update), so it
        must have no side effects; when it raises, the stored state is left as it was.
        """
        ...

    def get(self, key: int) -> int | None:
        """Return the session's packed state, or ``None``; a read that is not activity."""
        ...

    def secret(self, name: str, ttl: float) -> bytes:
        """Return the random 32-byte secret kept under ``name``, made at the first call.

        Every process sharing the store gets the same one; it is deleted ``ttl`` seconds after
        it was made (a later call makes a new one).
        """
        ...

    def mark(self, key: int, ttl: float) -> bool:
        """Record the 128-bit ``key``; return whether it was new. It is forgotten ``ttl`` s later.

        Marks live beside the sessions, not among them (they are not counted by ``len``).
        """
        ...

    def ping(self) -> None:
        """Check that the store can take an update now; raise ``StoreUnavailable`` if not."""
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
