"""The receiver's exceptions: bad values (``ReceiverError``) and an unavailable store."""

from __future__ import annotations

__all__ = ["ConfigError", "PayloadError", "ReceiverError", "StoreUnavailable"]


class ReceiverError(ValueError):
    """Base of every error this package raises on purpose."""


class PayloadError(ReceiverError):
    """A request body that cannot be turned into a panel event.

    ``path`` locates the problem in the JSON document with dots for object keys and brackets for
    array indices (``variables[1].values[0]``); it is ``""`` when the body as a whole is wrong.
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.message} (at {self.path})" if self.path else self.message


class ConfigError(ReceiverError):
    """A setting whose value cannot be used; the message quotes it and says what is allowed."""


class StoreUnavailable(RuntimeError):
    """The session store cannot serve now; nothing was recorded, the request may be retried.

    A file that cannot be written, a full disk, a Redis that is gone or slower than
    ``--store-timeout``: ``/write`` answers 503 with ``Retry-After``.
    """
