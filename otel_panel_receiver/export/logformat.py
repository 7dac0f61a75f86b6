"""Render one log line the way the upstream receiver prints it: go-kit logfmt or JSON.

Pure rendering over ``(level, msg, fields)``; the stdout log exporter and the receiver's own
operational log both use it, so every line on stdout has one format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Literal

import msgspec

from otel_panel_receiver.attributes import LogFields, SharedPart, UniqueKeys

__all__ = ["LineRenderer", "LogFormat", "render_json", "render_logfmt"]

LogFormat = Literal["logfmt", "json"]

# go-logfmt: a key loses these runes, and a value containing one is quoted.
_SPECIAL: Final = re.compile(r'[\x00-\x20="\x7f\ufffd]')
_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_TO_ESCAPE: Final = re.compile(r'["\\\x00-\x1f\x7f]')
_ENCODER: Final = msgspec.json.Encoder()
_PAIRS_MAX: Final = 8192
#: The pairs kept: values of at most this many characters, this many values a key and this
#: many keys (each emptied when full): about 25 MiB at worst, whatever clients send.
_PAIR_LONGEST: Final = 256
_VALUES_KEPT: Final = 512
_KEYS_KEPT: Final = 64
#: The rendered shared parts kept (each of at most this many characters); emptied when full.
_PARTS_KEPT: Final = 1024
_PART_LONGEST: Final = 4096


class LineRenderer:
    """Render lines in one format, remembering the logfmt text that repeats.

    Most key/value pairs repeat from line to line (host, user, dashboard, variables), so their
    rendered form is kept, by key then value (two lookups of strings, whose hashes Python
    keeps, cost less than building and hashing a pair). The per-payload fields come as
    :class:`LogFields`, whose shared parts (a host's, a viewer's, ...) are rendered once
    and their text kept, by the part itself. The memory is bounded and emptied when full,
    since values can be anything a client sends.
    """

    def __init__(self, fmt: LogFormat = "logfmt") -> None:
        self.fmt: LogFormat = fmt
        self._pairs: dict[str, dict[str, str]] = {}
        self._parts: dict[int, tuple[SharedPart, str]] = {}
        self._heads: dict[tuple[str, str], str] = {}  # a few (level, msg): the code's own

    def render(self, level: str, msg: str, fields: Mapping[str, Any]) -> str:
        """Return one line (with its newline) in this renderer's format."""
        if self.fmt == "json":
            return render_json(level, msg, fields)
        if type(fields) is LogFields:
            line = self._render_parts(level, msg, fields)
            if line is not None:
                return line
        return render_logfmt(level, msg, fields, self._pairs)

    def _render_parts(self, level: str, msg: str, fields: LogFields) -> str | None:
        """Return the line from its parts' texts, the shared ones from memory; None if some
        key must change (the general rendering renames it)."""
        head = self._heads.get((level, msg))
        if head is None:
            head = f"level={_value(level)} msg={_value(msg)}"
            if len(self._heads) < _KEYS_KEPT:
                self._heads[level, msg] = head
        texts = [head]
        kept = self._parts
        for part in fields.parts:
            if type(part) is SharedPart:
                # By identity: the entry keeps the part, so its id cannot be reused meanwhile.
                entry = kept.get(id(part))
                if entry is not None and entry[0] is part:
                    text: str | None = entry[1]
                else:
                    text = _pairs_text(part, self._pairs)
                    if text is not None and len(text) <= _PART_LONGEST:
                        if len(kept) >= _PARTS_KEPT:
                            kept.clear()
                        kept[id(part)] = (part, text)
            else:
                text = _pairs_text(part, self._pairs)
            if text is None:
                return None
            if text:
                texts.append(text)
        return " ".join(texts) + "\n"


def render_logfmt(
    level: str,
    msg: str,
    fields: Mapping[str, Any],
    pairs: dict[str, dict[str, str]] | None = None,
) -> str:
    """Return ``level=.. msg=.. key=value ...``; a key is never lost nor repeated.

    Runes go-logfmt forbids in keys are stripped, as upstream does; a key left empty or already
    on the line is written as ``var_<key>`` (numbered if needed) instead of dropping the line.
    ``pairs`` remembers rendered string pairs between calls (see :class:`LineRenderer`).
    """
    head = f"level={_value(level)} msg={_value(msg)}"
    text = _pairs_text(fields, {} if pairs is None else pairs)
    if text is None:
        return _render_renaming([head], fields)
    return f"{head} {text}\n" if text else f"{head}\n"


def _pairs_text(fields: Mapping[str, Any], pairs: dict[str, dict[str, str]]) -> str | None:
    """Return ``key=value ...`` for fields whose keys are all clean, else None.

    The common line: every key already clean and none of level/msg, so no two can collide (a
    mapping's keys are distinct, and so are those of a line's parts) and each pair is rendered
    alone, most from memory.
    """
    parts: list[str] = []
    append = parts.append
    clean_keys = _CLEAN_KEYS
    for key, value in fields.items():
        if key not in clean_keys and not _is_clean(key):
            return None
        cls = value.__class__
        if cls is str:
            by_value = pairs.get(key)
            if by_value is None:
                if len(pairs) >= _KEYS_KEPT:
                    pairs.clear()
                by_value = pairs[key] = {}
            pair = by_value.get(value)
            if pair is None:
                pair = f"{key}={_value(value)}"
                if len(value) <= _PAIR_LONGEST:
                    if len(by_value) >= _VALUES_KEPT:
                        by_value.clear()
                    by_value[value] = pair
            append(pair)
        elif cls is int:
            append(f"{key}={value}")
        elif cls is bool:
            append(f"{key}=true" if value else f"{key}=false")
        else:
            append(f"{key}={_value(value)}")
    return " ".join(parts)


#: Keys known clean (kept as they are on a logfmt line) and not ``level`` or ``msg``; bounded.
_CLEAN_KEYS: Final[set[str]] = set()


def _is_clean(key: str) -> bool:
    clean = bool(key) and key not in ("level", "msg") and not _SPECIAL.search(key)
    if clean and len(_CLEAN_KEYS) < _PAIRS_MAX:
        _CLEAN_KEYS.add(key)
    return clean


def _render_renaming(parts: list[str], fields: Mapping[str, Any]) -> str:
    """Render a line some of whose keys must change: stripped of runes, or renamed if taken."""
    keys = UniqueKeys(("level", "msg"))
    for key, value in fields.items():
        parts.append(f"{keys.add(_SPECIAL.sub('', key))}={_value(value)}")
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
