"""Log line rendering: go-kit's logfmt and JSON shapes, minus upstream's lost lines."""

from __future__ import annotations

import io
import json
import logging
import random

import pytest

from otel_panel_receiver.attributes import (
    REDACTED,
    LogAttributes,
    LogFields,
    SharedPart,
    UniqueKeys,
)
from otel_panel_receiver.export.logformat import LineRenderer, render_json, render_logfmt
from otel_panel_receiver.export.oplog import LineHandler
from otel_panel_receiver.model import PanelEvent
from otel_panel_receiver.payload import decode
from otel_panel_receiver.testing import sample_payload


def test_logfmt_quotes_only_values_that_need_it() -> None:
    line = render_logfmt("info", "Received session data", {"a": "plain", "b": "two words", "c": ""})
    assert line == 'level=info msg="Received session data" a=plain b="two words" c=\n'


def test_logfmt_escapes_quotes_backslashes_and_control_characters() -> None:
    line = render_logfmt("info", "m", {"v": 'say "hi"\\\n\t\x01'})
    assert line == 'level=info msg=m v="say \\"hi\\"\\\\\\n\\t\\u0001"\n'


def test_logfmt_renders_bools_and_numbers_like_go() -> None:
    assert render_logfmt("info", "m", {"t": True, "f": False, "n": 7}) == (
        "level=info msg=m t=true f=false n=7\n"
    )


def test_logfmt_strips_forbidden_key_runes_as_upstream() -> None:
    assert render_logfmt("info", "m", {"my var": 1, 'x="y': 2}) == "level=info msg=m myvar=1 xy=2\n"


def test_logfmt_never_drops_a_line_for_an_empty_or_repeated_key() -> None:
    # Upstream drops the whole line when a key strips to nothing (docs/protocol.md, "Its log line").
    line = render_logfmt("info", "m", {"": 1, "=": 2, "a b": 3, "ab": 4, "level": 5})
    assert line == "level=info msg=m var_=1 var__2=2 ab=3 var_ab=4 var_level=5\n"


def test_logfmt_unicode_passes_through() -> None:
    assert render_logfmt("info", "m", {"k": "Grüße 📊"}) == 'level=info msg=m k="Grüße 📊"\n'


def test_json_is_one_object_with_level_and_msg_first() -> None:
    line = render_json("warn", "m", {"a": 1, "nested": {"x": [1, "y"]}})
    assert line.endswith("\n") and line.count("\n") == 1
    assert list(json.loads(line).items()) == [
        ("level", "warn"), ("msg", "m"), ("a", 1), ("nested", {"x": [1, "y"]}),
    ]  # fmt: skip


def test_json_never_overwrites_level_or_msg() -> None:
    assert json.loads(render_json("info", "m", {"msg": "x"})) == {
        "level": "info", "msg": "m", "var_msg": "x",
    }  # fmt: skip


def test_line_handler_prints_operational_messages_in_the_same_format() -> None:
    out = io.StringIO()
    logger = logging.getLogger("test_line_handler")
    logger.propagate = False
    logger.addHandler(LineHandler("logfmt", out))
    logger.warning("Exporter failed", extra={"fields": {"endpoint": "http://x:4318"}})
    assert out.getvalue() == 'level=warn msg="Exporter failed" endpoint=http://x:4318\n'


def test_repeated_lines_render_identically_and_bools_never_take_an_int_rendering() -> None:
    first = render_logfmt("info", "m", {"a": 1, "b": "x y"})
    assert render_logfmt("info", "m", {"a": 1, "b": "x y"}) == first
    line = render_logfmt("info", "m", {"a": True, "b": "x y"})
    assert line == 'level=info msg=m a=true b="x y"\n'


def test_an_exception_is_logged_with_its_repr_and_traceback() -> None:
    out = io.StringIO()
    logger = logging.getLogger("test_line_handler_exc")
    logger.propagate = False
    logger.addHandler(LineHandler("json", out))
    try:
        raise RuntimeError("exporter bug")
    except RuntimeError:
        logger.exception("OTLP exporter raised")
    line = json.loads(out.getvalue())
    assert line["err"] == "RuntimeError('exporter bug')"
    assert line["traceback"].startswith("Traceback (most recent call last):")
    assert line["traceback"].endswith("RuntimeError: exporter bug")


def test_a_renderer_remembers_pairs_but_never_carries_a_key_into_another_line() -> None:
    renderer = LineRenderer("logfmt")
    assert renderer.render("info", "m", {"a": 1, "b": "x"}) == "level=info msg=m a=1 b=x\n"
    assert renderer.render("info", "m", {"a": 1, "a2": 1}) == "level=info msg=m a=1 a2=1\n"
    assert renderer.render("info", "m", {"b": "x"}) == "level=info msg=m b=x\n"


def test_many_variables_of_one_name_get_distinct_keys_in_order() -> None:
    keys = UniqueKeys(("level", "msg"))
    got = [keys.add("") for _ in range(5)] + [keys.add("var__3"), keys.add("")]
    assert got == ["var_", "var__2", "var__3", "var__4", "var__5", "var_var__3", "var__6"]
    many = UniqueKeys()
    assert len({many.add("x") for _ in range(20_000)}) == 20_000


class CountingSet(set[str]):
    probes = 0

    def __contains__(self, key: object) -> bool:
        CountingSet.probes += 1
        return super().__contains__(key)


@pytest.mark.parametrize("name", ["", "type", "x"])
def test_keys_for_n_variables_of_one_name_cost_a_bounded_number_of_probes_each(name: str) -> None:
    # The guard against the return of the quadratic key search (n variables without a name
    # made n²/2 probes: 21,000 of them in one 64 KiB body took 33 s).
    keys = UniqueKeys(("level", "msg", "type"))
    keys.taken = CountingSet(keys.taken)
    CountingSet.probes = 0
    for _ in range(5_000):
        keys.add(name)
    assert CountingSet.probes <= 3 * 5_000


def test_the_remembered_pairs_stay_bounded_and_every_line_renders_as_without_them() -> None:
    rng = random.Random(9)
    renderer = LineRenderer("logfmt")
    for n in range(20_000):  # random keys and values, some of them long, as clients may send
        fields = {
            f"var{rng.randrange(300)}": "".join(rng.choices('ab "=\\', k=rng.randrange(600)))
            for _ in range(4)
        }
        fields["user_login"] = f"user-{n}"
        line = renderer.render("info", "Received session data", fields)
        if n % 97 == 0:
            assert line == render_logfmt("info", "Received session data", fields)
    pairs = renderer._pairs
    assert len(pairs) <= 64 and all(len(values) <= 512 for values in pairs.values())
    assert all(len(value) <= 256 for values in pairs.values() for value in values)


def hostile_events(count: int, seed: int) -> list[PanelEvent]:
    """Events of a few hosts, viewers and dashboards, with variables clients could name."""
    rng = random.Random(seed)
    doc = json.loads(sample_payload("v2-start.json"))
    names = ["env", "a b", "", "type", "x=y", "uuid", "msg", 'q"', "env"]
    events = []
    for n in range(count):
        doc["uuid"] = f"s{n % 50}"
        doc["time"] = 1_700_000_000 + n
        doc["user"]["login"] = rng.choice(["jdoe", "ann", "bob b", "e=mc2", 'x"y'])
        doc["host"]["hostname"] = rng.choice(["g1", "g 2"])
        doc["dashboard"]["uid"] = rng.choice(["d1", "d2", "d3"])
        doc["timeZone"] = rng.choice(["utc", "browser"])
        doc["variables"] = [
            {"name": rng.choice(names), "values": [rng.choice(["1", "a b", "\n"])]}
            for _ in range(rng.randrange(4))
        ]
        events.append(decode(json.dumps(doc).encode(), now=0))
    return events


@pytest.mark.parametrize("redact", [frozenset(), frozenset({"uuid", "user_login", "env"})])
def test_lines_from_remembered_parts_are_the_lines_of_the_plain_fields(
    redact: frozenset[str],
) -> None:
    remembering, renderer, json_renderer = (
        LogAttributes(redact=redact),
        LineRenderer(),
        LineRenderer("json"),
    )
    for event in hostile_events(2_000, seed=len(redact)):
        fields = remembering(event)
        plain = dict(LogAttributes(redact=redact)(event))  # nothing remembered
        assert dict(fields) == plain
        assert renderer.render("info", "m", fields) == render_logfmt("info", "m", plain)
        assert json_renderer.render("info", "m", fields) == render_json("info", "m", plain)
        assert all(plain[key] == REDACTED for key in redact if key in plain)


def test_the_remembered_part_texts_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_panel_receiver.export import logformat

    monkeypatch.setattr(logformat, "_PARTS_KEPT", 40)
    renderer, attributes = LineRenderer(), LogAttributes()
    for event in hostile_events(3_000, seed=3):
        fields = attributes(event)
        assert renderer.render("info", "m", fields) == render_logfmt("info", "m", dict(fields))
        assert len(renderer._parts) <= 40
    long = SharedPart({"k": "v" * 10_000})  # longer than a text worth keeping
    renderer.render("info", "m", LogFields(({"uuid": "u"}, long)))
    assert all(part is not long for part, _ in renderer._parts.values())
