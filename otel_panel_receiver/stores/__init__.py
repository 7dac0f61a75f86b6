"""Session stores: where session states live between a session's events.

Every store keeps packed session states (one ``int`` per session, see ``sessions.pack``) under
a 128-bit session key and offers one operation, an atomic read-modify-write of one key. The
memory store serves one process; LMDB (the default with several workers) and SQLite share
sessions between the workers of one host and keep them across restarts (SQLite across a power
cut too); Redis shares them between hosts.
"""

from __future__ import annotations

from otel_panel_receiver.stores._guard import RETRY_AFTER, GuardedStore
from otel_panel_receiver.stores._protocol import EvictionCallback, SessionStore, Update
from otel_panel_receiver.stores.factory import FORMS, check_store_url, open_store
from otel_panel_receiver.stores.lmdb import LmdbSessionStore
from otel_panel_receiver.stores.memory import MemorySessionStore
from otel_panel_receiver.stores.redis import RedisSessionStore
from otel_panel_receiver.stores.sqlite import SqliteSessionStore

__all__ = [
    "FORMS",
    "RETRY_AFTER",
    "EvictionCallback",
    "GuardedStore",
    "LmdbSessionStore",
    "MemorySessionStore",
    "RedisSessionStore",
    "SessionStore",
    "SqliteSessionStore",
    "Update",
    "check_store_url",
    "open_store",
]
