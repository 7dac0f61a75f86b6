"""Decoding: every field of the payload, flattened and 1.x payloads, clear errors with a path.

The fields are those of docs/protocol.md, "Fields"; the forms those of "Flattened payloads" and
"Older payloads".
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_panel_receiver import memo
from otel_panel_receiver.errors import PayloadError
from otel_panel_receiver.model import EventKind, PanelEvent
from otel_panel_receiver.payload import MAX_TIME, _decode, _flat, decode
from otel_panel_receiver.payload._convert import to_event
from otel_panel_receiver.payload._flat import unflatten
from otel_panel_receiver.testing import SAMPLE_PAYLOADS, sample_payload

NOW = 1_700_000_000


def load(name: str) -> dict[str, Any]:
    """Return a sample payload as a JSON object."""
    data: dict[str, Any] = json.loads(sample_payload(name))
    return data


def dec(doc: Any) -> PanelEvent:
    return decode(json.dumps(doc).encode(), now=NOW)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten like flat@5.0.2 with default options: empty containers stay as values."""
    items: Iterable[tuple[str, Any]]
    if isinstance(value, dict) and value:
        items = value.items()
    elif isinstance(value, list) and value:
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, child in items:
        out.update(flatten(child, f"{prefix}.{key}" if prefix else key))
    return out


@pytest.mark.parametrize("name", SAMPLE_PAYLOADS)
def test_every_sample_payload_decodes(name: str) -> None:
    ev = decode(sample_payload(name), now=NOW)
    assert ev.kind in EventKind
    assert ev.time > 0
    if not name.startswith("v1"):
        assert ev.uuid == load(name).get("uuid")


def test_v2_start_decodes_every_field() -> None:
    ev = decode(sample_payload("v2-start.json"), now=NOW)
    assert (ev.uuid, ev.kind, ev.type, ev.has_focus) == (
        "3f0c6a9e-2b7d-4c1e-9a51-7d2e4b8f6c10", EventKind.START, "start", True,
    )  # fmt: skip
    assert ev.options.server == "https://analytics.example.com/write"
    assert ev.options.dashboard == "$__dashboard"
    assert (ev.options.post_start, ev.options.post_end, ev.options.post_heartbeat) == (
        True, True, True,
    )  # fmt: skip
    assert (ev.options.heartbeat_interval, ev.options.heartbeat_always) == (60.0, False)
    assert (ev.options.show_details, ev.options.flatten) == (False, False)
    assert (ev.host.hostname, ev.host.port, ev.host.protocol) == (
        "grafana.example.com", "", "https:",
    )  # fmt: skip
    assert ev.host.build.version == "8.1.5" and ev.host.build.commit == "fdcf0a2a11"
    assert ev.host.build.env == "production" and ev.host.build.edition == "Open Source"
    assert (ev.host.license.has_license, ev.host.license.expiry) == (False, 0)
    assert (ev.dashboard.name, ev.dashboard.uid) == ("Service Overview", "ZQZXRMXMk")
    u = ev.user
    assert (u.is_signed_in, u.id, u.login, u.email, u.name) == (
        True, 7, "jdoe", "jdoe@example.com", "Jane Doe",
    )  # fmt: skip
    assert (u.light_theme, u.org_count, u.org_id, u.org_name, u.org_role) == (
        False, 1, 1, "Main Org.", "Editor",
    )  # fmt: skip
    assert (u.is_grafana_admin, u.timezone, u.locale, u.has_edit_permission_in_folders) == (
        False, "browser", "en-US", True,
    )  # fmt: skip
    assert [(v.name, v.label, v.type, v.multi, v.values) for v in ev.variables] == [
        ("env", "Environment", "custom", False, ("prod",)),
        ("instance", "Instance", "query", True, ("web-1:9100", "web-2:9100")),
    ]
    tr = ev.time_range
    assert (tr.start, tr.end, tr.raw_start, tr.raw_end) == (1618782134, 1618803734, "now-6h", "now")
    assert (ev.time_zone, ev.time_origin, ev.time) == ("browser", 1618803731, 1618803734)


@pytest.mark.parametrize(
    ("flat", "nested"),
    [
        ("v2-start-flattened.json", "v2-start.json"),
        ("v2-flattened-absolute-timerange.json", "v2-absolute-timerange.json"),
        ("v1.1.1-legacy-flattened.json", "v1.1.1-legacy.json"),
    ],
)
def test_flattened_payload_decodes_to_the_same_event_as_nested(flat: str, nested: str) -> None:
    a = decode(sample_payload(flat), now=NOW)
    b = decode(sample_payload(nested), now=NOW)
    if flat.startswith("v1"):  # 1.x omitted the variables when flattening
        b = PanelEvent(**{f: getattr(b, f) for f in b.__struct_fields__ if f != "variables"})
    # The flattened sample carries flatten=true in its options, the nested one false.
    assert a.options.flatten and not b.options.flatten
    assert {**_fields(a), "options": None} == {**_fields(b), "options": None}


def _fields(ev: PanelEvent) -> dict[str, Any]:
    return {f: getattr(ev, f) for f in ev.__struct_fields__}


@pytest.mark.parametrize("name", ["v2-start.json", "v2-variables-multi.json"])
def test_our_flatten_of_any_sample_decodes_like_the_nested_form(name: str) -> None:
    doc = load(name)
    assert dec(flatten(doc)) == dec(doc)


def test_heartbeat_sample_flattened_matches_nested_heartbeat() -> None:
    a = decode(sample_payload("v2-heartbeat-flattened.json"), now=NOW)
    b = decode(sample_payload("v2-heartbeat.json"), now=NOW)
    assert a.time == b.time and a.variables == b.variables and a.user == b.user


def test_absolute_range_moment_junk_yields_the_iso_strings() -> None:
    ev = decode(sample_payload("v2-flattened-absolute-timerange.json"), now=NOW)
    assert ev.time_range.raw_start == "2021-04-19T00:00:00.000Z"
    assert ev.time_range.raw_end == "2021-04-19T06:00:00.000Z"


def test_legacy_payload_is_one_start_with_host_and_port_split() -> None:
    ev = decode(sample_payload("v1.1.1-legacy.json"), now=NOW)
    assert (ev.kind, ev.uuid, ev.legacy) == (EventKind.START, "", True)
    assert (ev.host.hostname, ev.host.port) == ("grafana.example.com", "3000")
    assert ev.user.login == "admin" and ev.user.is_grafana_admin
    assert [(v.name, v.multi, v.values) for v in ev.variables] == [
        ("env", False, ("prod",)),
        ("instance", True, ("web-1:9100", "web-2:9100")),
    ]


def test_decimal_and_numeric_string_heartbeat_intervals_are_accepted() -> None:
    doc = load("v2-heartbeat.json")
    doc["options"]["heartbeatInterval"] = 30.5
    assert dec(doc).options.heartbeat_interval == 30.5
    doc["options"]["heartbeatInterval"] = " 45 "
    assert dec(doc).options.heartbeat_interval == 45.0
    doc["options"]["heartbeatInterval"] = -5
    assert dec(doc).options.heartbeat_interval == 0.0


def test_non_string_variable_values_become_their_json_text() -> None:
    doc = load("v2-start.json")
    doc["variables"][0]["values"] = [42, 1.5, True, None, "x"]
    assert dec(doc).variables[0].values == ("42", "1.5", "true", "null", "x")


def test_null_fields_and_missing_groups_take_zero_values() -> None:
    doc = {k: None for k in load("v2-start.json")}
    ev = dec({**doc, "type": "end", "time": 5})
    assert (ev.uuid, ev.kind, ev.time, ev.host.address, ev.user.login) == (
        "", EventKind.END, 5, "", "",
    )  # fmt: skip
    assert ev.variables == ()


def test_missing_time_is_the_receive_time() -> None:
    assert dec({"uuid": "u", "type": "start"}).time == NOW


def test_unknown_type_is_a_heartbeat_that_keeps_its_type_text() -> None:
    ev = dec({"uuid": "u", "type": "refresh", "time": 1})
    assert (ev.kind, ev.type, ev.type_is_known) == (EventKind.HEARTBEAT, "refresh", False)


def test_unknown_keys_are_ignored() -> None:
    doc = load("v2-start.json")
    doc["somethingNew"] = {"deep": [1, 2, {"x": None}]}
    doc["user"]["gravatarUrl"] = "/avatar/x"
    assert dec(doc) == dec(load("v2-start.json"))


def test_content_after_keys_with_dots_in_values_is_not_unflattened() -> None:
    doc = load("v2-start.json")
    doc["dashboard"]["name"] = "a.b.c"
    assert dec(doc).dashboard.name == "a.b.c"


@pytest.mark.parametrize(
    ("body", "message", "path"),
    [
        (b"", "body is empty", ""),
        (b"   ", "body is empty", ""),
        (b"{", "not valid JSON", ""),
        (b'{"time": 1} trailing', "not valid JSON", ""),
        (b"null", "expected object, got null", ""),
        (b"[]", "expected object, got array", ""),
        (b'"x"', "expected object", ""),
        (b'{"time": "1618803734"}', "expected integer, got string", "time"),
        (b'{"time": 1618803734.5}', "expected integer, got number", "time"),
        (b'{"time": -1}', "unix time", "time"),
        (b'{"time": 1618803734000}', "unix time", "time"),
        (b'{"hasFocus": "yes"}', "expected boolean", "hasFocus"),
        (b'{"host": {"port": 3000}}', "expected string", "host.port"),
        (b'{"user": {"id": 1e400}}', "", "user.id"),
        (b'{"user": {"id": 99999999999999999999}}', "", "user.id"),
        (b'{"variables": {}}', "expected array", "variables"),
        (b'{"variables": [{"values": [1, {}]}]}', "got object", "variables[0].values[1]"),
        (b'{"timeRange": {"raw": {"from": 5}}}', "got integer", "timeRange.raw.from"),
        (
            b'{"options": {"heartbeatInterval": "fast"}}',
            "number of seconds",
            "options.heartbeatInterval",
        ),
        (b'{"user.id": "seven"}', "expected integer", "user.id"),
        (b"\xff\xfe", "not valid JSON", ""),
        (b'{"uuid": "\\ud800"}', "not valid JSON", ""),
        (b'{"x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nested too deeply", ""),
    ],
)
def test_bad_bodies_raise_payload_error_naming_problem_and_path(
    body: bytes, message: str, path: str
) -> None:
    with pytest.raises(PayloadError) as info:
        decode(body, now=NOW)
    assert message in info.value.message
    assert info.value.path == path


def test_max_time_is_accepted() -> None:
    assert dec({"time": MAX_TIME}).time == MAX_TIME


def test_unflatten_turns_numeric_keys_into_lists_without_filling_gaps() -> None:
    assert unflatten({"a.0": "x", "a.999999999": "y", "b.c": 1}) == {"a": ["x", "y"], "b": {"c": 1}}


def test_unflatten_takes_only_ascii_digits_for_list_indices() -> None:
    # "²" and "٣" are digits to str.isdigit; a hostile key must stay a key, never a crash.
    assert unflatten({"a.²": "x", "b.٣": "y"}) == {"a": {"²": "x"}, "b": {"٣": "y"}}
    # A body with such a key: a payload, or a PayloadError, never another exception.
    with contextlib.suppress(PayloadError):
        decode('{"\u00b2.0": 1, "\u00b2.1": 2}'.encode(), now=0)


def test_unflatten_merges_empty_container_values() -> None:
    assert unflatten({"v": [], "v.0.name": "x", "w.0": 1, "w": []}) == {
        "v": [{"name": "x"}],
        "w": [1],
    }


def test_a_key_both_value_and_parent_keeps_the_nested_keys_in_either_order() -> None:
    # flatten() never makes one; an unknown key of any name is ignored, so is such a value.
    assert unflatten({"a": 1, "a.b": 2}) == {"a": {"b": 2}}
    assert unflatten({"a.b": 2, "a": 1}) == {"a": {"b": 2}}
    assert unflatten({"": 1, ".x": 2}) == {"": {"x": 2}}
    event = decode(b'{"x": 5, "x.y": 1, "user.login": "jdoe", "type": "start"}', now=NOW)
    assert event.user.login == "jdoe"


def reference_unflatten(flat: dict[str, Any]) -> Any:
    """The plain two-pass reading of flat's unflatten: build the tree, then make lists."""
    root: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = root
        for part in parents:
            if type(node.get(part)) is not dict:
                node[part] = {}
            node = node[part]
        if not (type(node.get(leaf)) is dict and node[leaf]):
            node[leaf] = value

    def lists(node: dict[str, Any]) -> Any:
        items = {k: lists(v) if type(v) is dict else v for k, v in node.items()}
        if items and all(k.isascii() and k.isdigit() for k in items):
            return [items[k] for k in sorted(items, key=int)]
        return items

    return lists(root)


segments = st.sampled_from(["0", "1", "2", "10", "a", "b", "", "\u00b2", "07"])
flat_keys = st.lists(segments, min_size=1, max_size=4).map(".".join)
flat_values = st.one_of(
    st.integers(), st.text(max_size=3), st.builds(dict), st.builds(list),
    st.builds(lambda: {"0": 1, "1": 2}), st.builds(lambda: {"x": {"0": "y"}}),
)  # fmt: skip


@settings(max_examples=500)
@given(flat=st.dictionaries(flat_keys, flat_values, max_size=12))
def test_unflatten_reads_any_flat_body_as_the_two_pass_reading_does(flat: dict[str, Any]) -> None:
    # Each on its own copy: the walk inserts into the objects a body carries as values.
    assert unflatten(copy.deepcopy(flat)) == reference_unflatten(copy.deepcopy(flat))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)
field_names = st.sampled_from(
    ["uuid", "type", "time", "timeOrigin", "hasFocus", "options", "host", "dashboard", "user",
     "variables", "timeRange", "timeZone", "options.heartbeatInterval", "user.id",
     "variables.0.values.0", "timeRange.raw.from._d", "environment", "context", "host.port"]
)  # fmt: skip


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_payload_error(body: bytes) -> None:
    with contextlib.suppress(PayloadError):  # anything else fails the test
        decode(body, now=NOW)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(field_names | st.text(max_size=8), json_values, max_size=8))
def test_arbitrary_json_objects_only_ever_raise_payload_error(doc: dict[str, Any]) -> None:
    try:
        ev = dec(doc)
    except PayloadError as exc:
        assert exc.message  # every refusal says what was wrong
    else:
        assert 0 <= ev.time <= MAX_TIME


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(SAMPLE_PAYLOADS),
    path_value=st.lists(st.tuples(field_names, json_values), max_size=3),
    flat=st.booleans(),
)
def test_mutated_samples_only_ever_raise_payload_error(
    sample: str, path_value: list[tuple[str, Any]], flat: bool
) -> None:
    doc = load(sample)
    if flat:
        doc = flatten(doc)
    for key, value in path_value:
        doc[key] = value
    with contextlib.suppress(PayloadError):  # anything else fails the test
        dec(doc)


def test_the_plans_of_flattened_key_lists_are_bounded_and_one_too_long_is_not_kept() -> None:
    for n in range(1_500):  # key lists that a client makes up
        assert dec({"type": "end", "time": MAX_TIME, f"user.k{n}": n}).kind is EventKind.END
        assert len(_decode._PLANS) <= 1024
    for n in range(200):  # long key lists, each within what one plan may hold (16 KiB)
        keys = {f"user.k{n}.{i}": 0 for i in range(800)}
        assert dec({"type": "end", "time": MAX_TIME, **keys}).kind is EventKind.END
        assert sum(len(key) for keys in _decode._PLANS for key in keys) <= 1 << 20
    doc = flatten(load("v2-heartbeat.json"))
    long = {**doc, **{f"variables.0.values.{i}": str(i) for i in range(2_000)}}  # > 16 KiB
    kept = len(_decode._PLANS)
    assert len(dec(long).variables[0].values) == 2_000
    assert len(_decode._PLANS) == kept


def test_unflatten_remembers_short_keys_only_and_a_bounded_number_of_them() -> None:
    for n in range(5_000):  # keys a client makes up, some of them long
        key = f"a.k{n}.{'x' * (n % 600)}"
        assert unflatten({key: 1}) == {"a": {f"k{n}": {"x" * (n % 600): 1}}}
    assert len(_flat._PATHS) <= 4096
    assert all(len(key) <= 256 for key in _flat._PATHS)


def typed_outcome(body: bytes) -> PanelEvent | tuple[str, str]:
    """Decode as the receiver did before the groups were remembered: the typed path alone."""
    try:
        doc = _decode.load(body, _decode._DECODER.decode)
        if _decode._lacks_groups(doc):
            doc = _decode._load(body, _decode._decode_generic)
        return to_event(doc, NOW)
    except PayloadError as exc:
        return exc.message, exc.path


def outcome(body: bytes) -> PanelEvent | tuple[str, str]:
    try:
        return decode(body, now=NOW)
    except PayloadError as exc:
        return exc.message, exc.path


group_fields = st.sampled_from(
    ["options.heartbeatInterval", "options.postEnd", "host.hostname", "host.port",
     "host.buildInfo", "host.buildInfo.env", "host.licenseInfo.expiry", "dashboard.uid",
     "dashboard", "user", "user.id", "user.login", "user.isGrafanaAdmin", "user.orgCount",
     "variables", "variables.0.values", "variables.0.value", "variables.1.multi", "type", "uuid",
     "timeRange.raw.from", "environment", "context", "time"]
)  # fmt: skip


def put(doc: Any, path: str, value: Any) -> None:
    """Set ``value`` at a dotted path, making the objects on the way where they are missing."""
    *parents, leaf = path.split(".")
    for part in parents:
        if isinstance(doc, list):
            doc = doc[int(part)] if int(part) < len(doc) else {}
        else:
            if not isinstance(doc.get(part), dict | list):
                doc[part] = {}
            doc = doc[part]
    if isinstance(doc, dict):
        doc[leaf] = value


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from([n for n in SAMPLE_PAYLOADS if not n.startswith("v1")]),
    changes=st.lists(st.tuples(group_fields, json_values), max_size=4),
    repeat=st.booleans(),
)
def test_remembered_groups_decode_any_payload_as_the_typed_path_does(
    sample: str, changes: list[tuple[str, Any]], repeat: bool
) -> None:
    doc = load(sample)
    for path, value in changes:
        put(doc, path, value)
    body = json.dumps(doc).encode()
    expected = typed_outcome(body)
    assert outcome(body) == expected
    if repeat:  # the second time from remembered groups: the same event, or the same error
        assert outcome(body) == expected


def test_a_repeated_group_is_one_value_and_the_memory_of_groups_is_bounded() -> None:
    doc = load("v2-heartbeat.json")
    first, second = decode(json.dumps(doc).encode(), now=NOW), dec(doc)
    assert first.user is second.user and first.host is second.host
    for n in range(memo.KEPT + 500):  # viewers one after another
        put(doc, "user.login", f"viewer-{n}")
        assert dec(doc).user.login == f"viewer-{n}"
        assert len(_decode._USER.kept) <= memo.KEPT
    put(doc, "user.name", "x" * memo.LARGEST)  # a group too long to keep
    kept = len(_decode._USER.kept)
    assert dec(doc).user.name == "x" * memo.LARGEST
    assert len(_decode._USER.kept) == kept
    assert dec(doc).user is not dec(doc).user


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(SAMPLE_PAYLOADS),
    nested=st.lists(st.tuples(group_fields, json_values), max_size=3),
    flat=st.lists(st.tuples(field_names | group_fields, json_values), max_size=3),
    dropped=st.lists(st.sampled_from(["options", "host", "user", "variables", "time"]), max_size=2),
)
def test_remembered_flat_groups_decode_any_flattened_payload_as_the_typed_path_does(
    sample: str,
    nested: list[tuple[str, Any]],
    flat: list[tuple[str, Any]],
    dropped: list[str],
) -> None:
    doc = load(sample)
    for path, value in nested:
        put(doc, path, value)
    doc = flatten(doc)
    for key, value in flat:  # keys of either form, a group sent whole among them
        doc[key] = value
    for head in dropped:  # a group, or a field, left out
        doc = {k: v for k, v in doc.items() if k.partition(".")[0] != head}
    body = json.dumps(doc).encode()
    expected = typed_outcome(body)
    assert outcome(body) == expected
    assert outcome(body) == expected  # again, from the remembered groups
