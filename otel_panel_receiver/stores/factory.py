"""Open the session store a URL names: ``memory``, ``lmdb:``, ``sqlite:`` or ``redis:``."""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Callable
from typing import Final

from otel_panel_receiver.errors import ConfigError
from otel_panel_receiver.stores._protocol import EvictionCallback, SessionStore
from otel_panel_receiver.stores.lmdb import LmdbSessionStore
from otel_panel_receiver.stores.memory import MemorySessionStore
from otel_panel_receiver.stores.redis import RedisSessionStore
from otel_panel_receiver.stores.sqlite import SqliteSessionStore

__all__ = ["FORMS", "check_store_url", "open_store"]

#: The accepted forms of a store URL, as error messages and help texts show them.
FORMS: Final = (
    "memory, lmdb:///absolute/directory, lmdb:relative/directory, "
    "sqlite:///absolute/path.db, sqlite:relative/path.db, "
    "redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path/to/redis.sock[?db=N]"
)
_REDIS_SCHEMES: Final = ("redis", "rediss", "unix")


#: The stores of one host's files: URL scheme -> the store, and what its path names.
_LOCAL: Final[dict[str, tuple[type[LmdbSessionStore] | type[SqliteSessionStore], str]]] = {
    "lmdb": (LmdbSessionStore, "directory"),
    "sqlite": (SqliteSessionStore, "file"),
}


def open_store(
    url: str,
    *,
    max_size: int,
    idle_ttl: float,
    on_evict: EvictionCallback | None = None,
    clock: Callable[[], float] | None = None,
    timeout: float = 2.0,
) -> SessionStore:
    """Return a new store for ``url`` (see :data:`FORMS`); ``clock`` defaults to the store's own.

    Raises :class:`ConfigError` for a URL of no accepted form, or Redis without its client
    library. Nothing connects yet for Redis; an SQLite file or an LMDB directory is created
    (with its tables) if it can be: one that cannot is reported and tried again at each call
    (its calls raise ``StoreUnavailable`` meanwhile), so a broken file never stops a worker
    from starting. ``timeout`` bounds how long a call waits on Redis or on another process's
    SQLite lock.
    """
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if url == "memory":
        return MemorySessionStore(
            max_size=max_size,
            idle_ttl=idle_ttl,
            on_evict=on_evict,
            clock=time.monotonic if clock is None else clock,
        )
    if sep and scheme in _LOCAL:
        store, what = _LOCAL[scheme]
        return store(
            _local_path(url, rest, scheme, what),
            max_size=max_size,
            idle_ttl=idle_ttl,
            on_evict=on_evict,
            clock=time.time if clock is None else clock,
            timeout=timeout,
        )
    if sep and scheme in _REDIS_SCHEMES:
        _check_redis_url(url)
        return RedisSessionStore(
            url,
            max_size=max_size,
            idle_ttl=idle_ttl,
            on_evict=on_evict,
            clock=time.time if clock is None else clock,
            timeout=timeout,
        )
    raise ConfigError(f"unknown session store {url!r}; expected one of: {FORMS}")


def check_store_url(url: str) -> None:
    """Raise :class:`ConfigError` now if ``url`` cannot name a usable store; connect to nothing.

    What the entry points run before they fork workers, so that a bad setting is one line and
    exit status 2, not a traceback per worker: the form of the URL, an SQLite file's directory
    (it must exist and be writable) and, for Redis, that the client library is installed.
    """
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if url == "memory":
        return
    if sep and scheme == "lmdb":
        path = _local_path(url, rest, "lmdb", "directory")
        _check_directory(url, path)
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"session store {url!r} names a file; name a directory")
        return
    if sep and scheme == "sqlite":
        path = _local_path(url, rest, "sqlite", "file")
        _check_directory(url, path)
        if os.path.isdir(path):
            raise ConfigError(f"session store {url!r} names a directory; name a file in it")
        return
    if sep and scheme in _REDIS_SCHEMES:
        _check_redis_url(url)
        return
    raise ConfigError(f"unknown session store {url!r}; expected one of: {FORMS}")


def _check_directory(url: str, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"session store {url!r}: the directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(
            f"session store {url!r}: the directory {directory!r} is not writable by this user "
            f"(the store makes its files there)"
        )


def _local_path(url: str, rest: str, scheme: str, kind: str) -> str:
    """Return the path of ``scheme:///absolute`` or ``scheme:relative``: a local file system's."""
    example = "path.db" if kind == "file" else "directory"
    if rest.startswith("//"):  # scheme://HOST/PATH, where only an empty host makes sense
        host, slash, path = rest[2:].partition("/")
        if host or not slash:
            raise ConfigError(
                f"session store {url!r} names a host; the store is local: use "
                f"{scheme}:///absolute/{example} or {scheme}:relative/{example}"
            )
        path = "/" + path
    else:
        path = rest
    path = urllib.parse.unquote(path)
    if kind == "directory":
        path = path.rstrip("/") or path
    if path.strip("/") == "" or path.endswith("/"):
        raise ConfigError(
            f"session store {url!r} names no {kind}; use {scheme}:///absolute/{example} "
            f"or {scheme}:relative/{example}"
        )
    return path


def _check_redis_url(url: str) -> None:
    """Refuse a Redis URL now, where it is a setting's fault, rather than at the first payload."""
    try:
        import redis.connection
    except ImportError:
        raise ConfigError(
            f"session store {url!r} needs the redis package: "
            f"pip install 'otel-panel-receiver[redis]'"
        ) from None
    try:
        # The parser the client itself uses; redis-py leaves it unannotated.
        options = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {url!r}: {exc}; expected one of: {FORMS}") from None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() == "unix":
        problem = "" if parts.path.strip("/") else "it names no socket path"
    elif "db" in options or parts.path.strip("/") == "":
        problem = ""
    else:  # redis-py would quietly use db 0
        problem = f"the database {parts.path.strip('/')!r} is not a number"
    if problem:
        raise ConfigError(f"bad Redis URL {url!r}: {problem}; expected one of: {FORMS}")
