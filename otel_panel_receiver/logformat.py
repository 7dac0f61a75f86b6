"""Render one log line the way the upstream receiver prints it: go-kit logfmt or JSON.

Pure functions over ``(level, msg, fields)``; the stdout log exporter and the receiver's own
operational log both use them, so every line on stdout has one format.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import IO, Any, Final, Literal

import msgspec

__all__ = ["LineHandler", "LogFormat", "render", "render_json", "render_logfmt"]

LogFormat = Literal["logfmt", "json"]

# go-logfmt: a key loses these runes; a value containing one is quoted.
_BAD_KEY: Final = re.compile(r'[\x00-\x20="\x7f\ufffd]')
_NEEDS_QUOTES: Final = re.compile(r'[\x00-\x20="\x7f\ufffd]')
_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_TO_ESCAPE: Final = re.compile(r'["\\\x00-\x1f\x7f]')
_ENCODER: Final = msgspec.json.Encoder()
# Most key/value pairs repeat from line to line (host, user, dashboard, variables): remember
# their rendered form. Bounded, and emptied when full: values can be anything a client sends.
_PAIRS: dict[tuple[str, Any], tuple[str, str]] = {}
_PAIRS_MAX: Final = 8192
_CACHEABLE: Final = frozenset({str, int})


def render(fmt: LogFormat, level: str, msg: str, fields: Mapping[str, Any]) -> str:
    """Return one line (with its newline) in the chosen format."""
    if fmt == "json":
        return render_json(level, msg, fields)
    return render_logfmt(level, msg, fields)


def render_logfmt(level: str, msg: str, fields: Mapping[str, Any]) -> str:
    """Return ``level=.. msg=.. key=value ...``; a key is never lost nor repeated.

    Runes go-logfmt forbids in keys are stripped, as upstream does; a key left empty or already
    on the line is written as ``var_<key>`` (numbered if needed) instead of dropping the line.
    """
    parts = [f"level={_value(level)}", f"msg={_value(msg)}"]
    seen = {"level", "msg"}
    pairs = _PAIRS
    for key, value in fields.items():
        cacheable = value.__class__ in _CACHEABLE  # not bool: True == 1 as a dict key
        if cacheable and (cached := pairs.get((key, value))) is not None and cached[0] not in seen:
            seen.add(cached[0])
            parts.append(cached[1])
            continue
        clean = _BAD_KEY.sub("", key)
        if clean in seen or not clean:
            clean = _unique(clean, seen)
        else:
            seen.add(clean)
        pair = f"{clean}={_value(value)}"
        parts.append(pair)
        if cacheable and clean == key:
            if len(pairs) >= _PAIRS_MAX:
                pairs.clear()
            pairs[key, value] = (clean, pair)
    return " ".join(parts) + "\n"


def render_json(level: str, msg: str, fields: Mapping[str, Any]) -> str:
    """Return one compact JSON object: ``level``, ``msg``, then the fields in order."""
    line = {"level": level, "msg": msg}
    for key, value in fields.items():
        line[_unique(key, set(line)) if key in line else key] = value
    return _ENCODER.encode(line).decode() + "\n"


def _unique(key: str, seen: set[str]) -> str:
    """Return ``key``, or ``var_<key>[_n]`` when it is empty or taken; record it as taken."""
    result = key
    if not key or key in seen:
        result = base = f"var_{key}"
        n = 2
        while result in seen:
            result, n = f"{base}_{n}", n + 1
    seen.add(result)
    return result


def _value(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    text = value if isinstance(value, str) else _text(value)
    if not text or not _NEEDS_QUOTES.search(text):
        return text
    return _quoted(text)


def _quoted(text: str) -> str:
    if _TO_ESCAPE.search(text) is None:  # the common case: spaces or "=" only
        return f'"{text}"'
    return '"' + _TO_ESCAPE.sub(_escape, text) + '"'


def _text(value: Any) -> str:
    if isinstance(value, int | float):
        return str(value)
    return _ENCODER.encode(value).decode()


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    return _ESCAPES.get(char) or f"\\u{ord(char):04x}"


class LineHandler(logging.Handler):
    """A ``logging`` handler that prints records as lines in the receiver's stdout format.

    The receiver's own messages (start-up, warnings) then look like the per-payload lines;
    ``extra={"fields": {...}}`` adds key/value fields.
    """

    def __init__(self, fmt: LogFormat = "logfmt", stream: IO[str] | None = None) -> None:
        super().__init__()
        self._fmt: LogFormat = fmt
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        """Render and write one record; never raise into the caller."""
        try:
            level = _LEVELS.get(record.levelno, record.levelname.lower())
            fields: dict[str, Any] = dict(getattr(record, "fields", {}))
            if record.exc_info and record.exc_info[1] is not None:
                fields["err"] = repr(record.exc_info[1])
            stream = self._stream if self._stream is not None else sys.stdout
            stream.write(render(self._fmt, level, record.getMessage(), fields))
            stream.flush()
        except Exception:  # logging must not take the process down
            self.handleError(record)


_LEVELS: Final = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}
