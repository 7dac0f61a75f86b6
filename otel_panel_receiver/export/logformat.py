"""Render one log line the way the upstream receiver prints it: go-kit logfmt or JSON.

Pure rendering over ``(level, msg, fields)``; the stdout log exporter and the receiver's own
operational log both use it, so every line on stdout has one format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Literal

import msgspec

from otel_panel_receiver.attributes import UniqueKeys

__all__ = ["LineRenderer", "LogFormat", "render_json", "render_logfmt"]

LogFormat = Literal["logfmt", "json"]

# go-logfmt: a key loses these runes, and a value containing one is quoted.
_SPECIAL: Final = re.compile(r'[\x00-\x20="\x7f\ufffd]')
_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_TO_ESCAPE: Final = re.compile(r'["\\\x00-\x1f\x7f]')
_ENCODER: Final = msgspec.json.Encoder()
_PAIRS_MAX: Final = 8192
_CACHEABLE: Final = frozenset({str, int})


class LineRenderer:
    """Render lines in one format, remembering the logfmt pairs that repeat.

    Most key/value pairs repeat from line to line (host, user, dashboard, variables), so their
    rendered form is kept; the memory is bounded and emptied when full, since values can be
    anything a client sends.
    """

    def __init__(self, fmt: LogFormat = "logfmt") -> None:
        self.fmt: LogFormat = fmt
        self._pairs: dict[tuple[str, Any], tuple[str, str]] = {}

    def render(self, level: str, msg: str, fields: Mapping[str, Any]) -> str:
        """Return one line (with its newline) in this renderer's format."""
        if self.fmt == "json":
            return render_json(level, msg, fields)
        return render_logfmt(level, msg, fields, self._pairs)


def render_logfmt(
    level: str,
    msg: str,
    fields: Mapping[str, Any],
    pairs: dict[tuple[str, Any], tuple[str, str]] | None = None,
) -> str:
    """Return ``level=.. msg=.. key=value ...``; a key is never lost nor repeated.

    Runes go-logfmt forbids in keys are stripped, as upstream does; a key left empty or already
    on the line is written as ``var_<key>`` (numbered if needed) instead of dropping the line.
    ``pairs`` remembers rendered pairs between calls (see :class:`LineRenderer`).
    """
    parts = [f"level={_value(level)}", f"msg={_value(msg)}"]
    keys = UniqueKeys(("level", "msg"))
    seen = keys.taken
    if pairs is None:
        pairs = {}
    for key, value in fields.items():
        cacheable = value.__class__ in _CACHEABLE  # not bool: True == 1 as a dict key
        if cacheable and (cached := pairs.get((key, value))) is not None and cached[0] not in seen:
            seen.add(cached[0])
            parts.append(cached[1])
            continue
        clean = keys.add(_SPECIAL.sub("", key))
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
    keys = UniqueKeys(line)
    for key, value in fields.items():
        # Any string is a JSON key, the empty one too: only a repeated key is renamed.
        line[keys.add(key) if key in line else key] = value
        keys.taken.add(key)
    return _ENCODER.encode(line).decode() + "\n"


def _value(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    text = value if isinstance(value, str) else _text(value)
    if not text or not _SPECIAL.search(text):
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
