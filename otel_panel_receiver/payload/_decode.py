"""Decode one request body into a :class:`PanelEvent`.

The fast path reads a payload as an :class:`~._wire.Envelope`: its scalars typed, its repeating
groups (options, host, dashboard, user, variables) as raw JSON text. A viewer's payloads repeat
those groups byte for byte, so each distinct text is decoded and converted once and its frozen
model value remembered (:class:`_Group`, bounded): a heartbeat then costs the envelope and five
lookups. A payload whose groups are flattened (the panel's ``flatten`` option) or missing is
decoded to plain JSON values, its flat keys sorted into their groups by their first segment,
and each group remembered by the JSON text of its flat keys and values. The sorting is a plan
made once per list of keys (:class:`_Plan`, bounded): a viewer's flattened payloads repeat
their keys too, so a heartbeat takes each group's values by position. Equal texts give equal
values, so the event is the one the typed path below would build.

The typed path takes the rest: 1.x payloads, groups sent whole in a flattened body, and any
body the fast path finds wrong, so that its error is named as it always was. It is a typed
msgspec decode of the nested schema or, for payloads that lack the nested groups, a generic
decode to plain JSON values, ``flat.flatten()`` undone, then the same types. Either way only
:class:`PayloadError` leaves this module, with the JSON path of the problem in the payload's
own key names.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable
from typing import Any, Final, Generic, NamedTuple, TypeVar

import msgspec
from msgspec import UNSET

from otel_panel_receiver.errors import PayloadError
from otel_panel_receiver.memo import Memo
from otel_panel_receiver.model import PanelEvent, Variable
from otel_panel_receiver.payload import _wire
from otel_panel_receiver.payload._convert import (
    assemble,
    to_dashboard,
    to_event,
    to_host,
    to_options,
    to_user,
    to_variables,
)
from otel_panel_receiver.payload._flat import path_of, unflatten

__all__ = ["decode", "load", "validation_error"]

T = TypeVar("T")
V = TypeVar("V")

# msgspec's Python type names in its messages, and the JSON names a client knows instead.
_TYPE_NAMES: Final = {
    "int": "integer", "str": "string", "float": "number", "bool": "boolean",
    "list": "array", "dict": "object", "NoneType": "null",
}  # fmt: skip
_TYPE_WORDS: Final = re.compile(r"\b(int|str|float|bool)\b")


_DECODER: Final = msgspec.json.Decoder(_wire.Payload)
_GENERIC: Final = msgspec.json.Decoder()
_ENVELOPE: Final = msgspec.json.Decoder(_wire.Envelope)


class _Group(Generic[V]):
    """One repeating group: its distinct JSON texts, each decoded and converted once.

    A flattened payload's group is its flat keys and values (``user.login``, ...), remembered
    by their JSON text (so ``1``, ``1.0`` and ``true`` stay apart) in a memory of their own.
    """

    __slots__ = ("_convert", "_decode", "_type", "flat_kept", "kept", "name")

    def __init__(self, name: str, wire_type: Any, convert: Callable[[Any], V]) -> None:
        self.name = name
        self._type = wire_type
        self._decode = msgspec.json.Decoder(wire_type).decode
        self._convert = convert
        self.kept: Memo[bytes, V] = Memo(size=len)  # bounded: see memo.py
        self.flat_kept: Memo[bytes, V] = Memo(size=len)

    def miss(self, text: bytes) -> V:
        """Decode and convert a text that ``kept`` does not hold, and remember it."""
        return self.kept.put(text, self._convert(self._decode(text)))

    def flat(self, taken: _Taken, values: list[Any]) -> V:
        """Return the group of a flattened payload: its flat keys ``taken`` of ``values``."""
        mine = taken.take(values)
        text = taken.text + _ENCODE(mine)
        value = self.flat_kept.get(text)
        if value is None:
            tree = (
                unflatten(dict(zip(taken.keys, mine, strict=True))).get(self.name) if mine else None
            )
            value = self.flat_kept.put(text, self._convert(msgspec.convert(tree, self._type)))
        return value


_ENCODE: Final = msgspec.json.Encoder().encode
_OPTIONS: Final = _Group("options", _wire.Options | None, to_options)
_HOST: Final = _Group("host", _wire.Host | None, to_host)
_DASHBOARD: Final = _Group("dashboard", _wire.Dashboard | None, to_dashboard)
_USER: Final = _Group("user", _wire.User | None, to_user)
_VARIABLES: Final = _Group("variables", list[_wire.Variable] | None, to_variables)
_GROUP_NAMES: Final = ("options", "host", "dashboard", "user", "variables")
_LEGACY: Final = frozenset({"environment", "context"})
#: The groups a flattened payload may still carry whole: null, or empty as flat keeps them.
_WHOLE: Final[dict[str, object]] = {"options": {}, "host": {}, "dashboard": {}, "user": {},
                                    "variables": [], "timeRange": {}}  # fmt: skip
#: Whatever the fast paths find wrong is left to the typed path, which names the problem
#: (and finds the first of several, as it always did).
_FAST_ERRORS: Final = (msgspec.MsgspecError, RecursionError, PayloadError)


def decode(body: bytes, *, now: int) -> PanelEvent:
    """Decode one payload; ``now`` stands in for a missing ``time``.

    Raises :class:`PayloadError` naming the problem and its JSON path.
    """
    try:
        event = _fast(body, now)
    except _FAST_ERRORS:
        event = None
    if event is not None:
        return event
    doc = load(body, _DECODER.decode)
    if _lacks_groups(doc):
        doc = _load(body, _decode_generic)
    return to_event(doc, now)


def _fast(body: bytes, now: int) -> PanelEvent | None:
    """Return the event of a v2 payload, from remembered groups; None for other forms."""
    doc = _ENVELOPE.decode(body)
    if (
        not doc.options
        or not doc.host
        or not doc.dashboard
        or not doc.user
        or doc.time_range is UNSET
    ):
        return _flattened(body, now)  # or minimal, or 1.x
    if doc.environment or doc.context:
        return None  # 1.x: the typed path tells
    # Each group by its text from its memory, or decoded and kept (in place: five a payload).
    options = _OPTIONS.kept.get(text := bytes(doc.options))
    if options is None:
        options = _OPTIONS.miss(text)
    host = _HOST.kept.get(text := bytes(doc.host))
    if host is None:
        host = _HOST.miss(text)
    dashboard = _DASHBOARD.kept.get(text := bytes(doc.dashboard))
    if dashboard is None:
        dashboard = _DASHBOARD.miss(text)
    user = _USER.kept.get(text := bytes(doc.user))
    if user is None:
        user = _USER.miss(text)
    variables: tuple[Variable, ...] = ()
    if doc.variables:
        found = _VARIABLES.kept.get(text := bytes(doc.variables))
        variables = _VARIABLES.miss(text) if found is None else found
    return assemble(doc, now, options=options, host=host, dashboard=dashboard, user=user,
                    variables=variables)  # fmt: skip


def _flattened(body: bytes, now: int) -> PanelEvent | None:
    """Return the event of a v2 payload whose groups are flattened (or missing), each group
    from its flat keys remembered; None for a 1.x payload."""
    document = _GENERIC.decode(body)
    if not isinstance(document, dict):
        return None
    keys = tuple(document)
    plan = _PLANS.get(keys)
    if plan is None:
        plan = _PLANS.put(keys, _plan(keys))
    if plan.legacy:
        return None
    values = list(document.values())
    for index, head in plan.whole:
        value = values[index]
        if value is not None and value != _WHOLE[head]:
            return None  # a group sent whole: the typed path checks it
    rest = dict(zip(plan.rest.keys, plan.rest.take(values), strict=True))
    doc = msgspec.convert(unflatten(rest) if plan.dotted else rest, _wire.Payload)
    options, host, dashboard, user, variables = plan.groups
    return assemble(
        doc,
        now,
        options=_OPTIONS.flat(options, values),
        host=_HOST.flat(host, values),
        dashboard=_DASHBOARD.flat(dashboard, values),
        user=_USER.flat(user, values),
        variables=_VARIABLES.flat(variables, values),
    )


class _Taken(NamedTuple):
    """Some keys of a flattened payload: their names, as JSON text too, and how to take their
    values from the payload's values (in the order of its keys)."""

    keys: tuple[str, ...]
    text: bytes
    take: Callable[[list[Any]], tuple[Any, ...]]


class _Plan(NamedTuple):
    """Where the keys of a flattened payload go: the same for every payload with the same keys
    in the same order, which a viewer's payloads are. Made once per key list (``_PLANS``)."""

    legacy: bool  # a 1.x field: the typed path tells
    whole: tuple[tuple[int, str], ...]  # where a group's own key is, and the group
    groups: tuple[_Taken, ...]  # options, host, dashboard, user, variables
    rest: _Taken  # the keys of no group: the envelope
    dotted: bool  # whether the rest has flat keys to undo


def _plan(keys: tuple[str, ...]) -> _Plan:
    """Sort a flattened payload's keys into their groups by their first segment."""
    taken: dict[str, tuple[list[str], list[int]]] = {name: ([], []) for name in _GROUP_NAMES}
    rest: tuple[list[str], list[int]] = ([], [])
    whole: list[tuple[int, str]] = []
    legacy = dotted = False
    for index, key in enumerate(keys):
        head = path_of(key)[3]
        dot = len(head) < len(key)
        legacy = legacy or head in _LEGACY
        if not dot and head in _WHOLE:
            whole.append((index, head))
        names, indices = taken.get(head, rest)
        names.append(key)
        indices.append(index)
        dotted = dotted or (dot and head not in taken)
    groups = tuple(_taken(*taken[name]) for name in _GROUP_NAMES)
    return _Plan(legacy, tuple(whole), groups, _taken(*rest), dotted)


def _taken(keys: list[str], indices: list[int]) -> _Taken:
    take: Callable[[list[Any]], tuple[Any, ...]]
    if len(indices) > 1:
        take = operator.itemgetter(*indices)
    elif indices:
        take = functools.partial(_one, indices[0])
    else:
        take = _none
    return _Taken(tuple(keys), _ENCODE(keys), take)


def _one(index: int, values: list[Any]) -> tuple[Any, ...]:
    return (values[index],)


def _none(values: list[Any]) -> tuple[Any, ...]:
    return ()


def _keys_size(keys: tuple[str, ...]) -> int:
    return sum(map(len, keys)) + 3 * len(keys)  # their JSON, within a few bytes


#: The plans of the key lists seen (bounded: a client chooses them; one too long is not kept).
_PLANS: Final[Memo[tuple[str, ...], _Plan]] = Memo(kept=1024, budget=1 << 20, largest=16 << 10,
                                                   size=_keys_size)  # fmt: skip


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
