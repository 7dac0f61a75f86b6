"""Decode one request body into a :class:`PanelEvent`.

The fast path is a typed msgspec decode of the nested v2 schema. Payloads that lack the nested
groups (the panel's ``flatten`` option, hand-made minimal bodies, 1.x payloads) take a second,
generic path: decode to plain JSON values, undo ``flat.flatten()``, then convert with the same
types. Either way only :class:`PayloadError` leaves this module, with the JSON path of the
problem in the payload's own key names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final, TypeVar

import msgspec
from msgspec import UNSET

from otel_panel_receiver.errors import PayloadError
from otel_panel_receiver.model import PanelEvent
from otel_panel_receiver.payload import _wire
from otel_panel_receiver.payload._convert import to_event
from otel_panel_receiver.payload._flat import unflatten

__all__ = ["decode", "load", "validation_error"]

T = TypeVar("T")

# msgspec's Python type names in its messages, and the JSON names a client knows instead.
_TYPE_NAMES: Final = {
    "int": "integer", "str": "string", "float": "number", "bool": "boolean",
    "list": "array", "dict": "object", "NoneType": "null",
}  # fmt: skip
_TYPE_WORDS: Final = re.compile(r"\b(int|str|float|bool)\b")


_DECODER: Final = msgspec.json.Decoder(_wire.Payload)
_GENERIC: Final = msgspec.json.Decoder()


def decode(body: bytes, *, now: int) -> PanelEvent:
    """Decode one payload; ``now`` stands in for a missing ``time``.

    Raises :class:`PayloadError` naming the problem and its JSON path.
    """
    doc = load(body, _DECODER.decode)
    if _lacks_groups(doc):
        doc = _load(body, _decode_generic)
    return to_event(doc, now)


def _lacks_groups(doc: _wire.Payload) -> bool:
    return (
        doc.options is UNSET
        or doc.host is UNSET
        or doc.user is UNSET
        or doc.dashboard is UNSET
        or doc.time_range is UNSET
    )


def load(body: bytes, how: Callable[[bytes], T]) -> T:
    """Decode one JSON object with ``how``; raise :class:`PayloadError` naming what is wrong."""
    if not body.strip():
        raise PayloadError("body is empty: expected one JSON object")
    return _load(body, how)


def _load(body: bytes, how: Callable[[bytes], T]) -> T:
    try:
        result = how(body)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    except msgspec.DecodeError as exc:
        message = str(exc).removeprefix("JSON is malformed: ")
        raise PayloadError(f"body is not valid JSON: {message}") from None
    except RecursionError:
        raise PayloadError("body is nested too deeply") from None
    return result


def _decode_generic(body: bytes) -> _wire.Payload:
    document = _GENERIC.decode(body)
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise PayloadError(f"body must be a JSON object, got {_TYPE_NAMES.get(kind, kind)}")
    if any("." in key for key in document):
        document = unflatten(document)
    return msgspec.convert(document, _wire.Payload)


def validation_error(exc: msgspec.ValidationError) -> PayloadError:
    """Return msgspec's validation error in JSON words, with its path in the body's key names."""
    message = str(exc)
    path = ""
    marker = " - at `$"
    if marker in message:
        message, _, tail = message.partition(marker)
        path = tail.rstrip("`").lstrip(".")
    message = _TYPE_WORDS.sub(lambda m: _TYPE_NAMES[m.group(0)], message.replace("`", ""))
    message = message.replace(" | null", "")
    if message.startswith(("Expected integer >= 0", "Expected integer <= ")):
        message = f"{message}: a unix time in whole seconds"
    message = message[:1].lower() + message[1:]
    return PayloadError(message, path.replace(".from_", ".from"))
