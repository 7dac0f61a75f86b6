"""The bounded memory of derived values: entries, bytes and the largest key, whatever is put."""

from __future__ import annotations

import random

from otel_panel_receiver.memo import Memo, json_size
from otel_panel_receiver.model import Viewer
from tests.conftest import AppFactory


def test_a_memo_keeps_within_its_entries_and_bytes_and_refuses_large_keys() -> None:
    rng = random.Random(4)
    memo: Memo[str, int] = Memo(kept=50, budget=2_000, largest=300, size=len)
    for n in range(5_000):
        key = "k" * rng.randrange(1, 400) + str(n)
        assert memo.put(key, n) == n  # the value is handed back, kept or not
        assert len(memo) <= 50
        assert sum(map(len, memo)) <= 2_000
        assert all(len(k) <= 300 for k in memo)
        assert (memo.get(key) == n) == (len(key) <= 300)  # kept unless too large


def test_a_full_memo_forgets_everything_at_once_and_starts_again() -> None:
    memo: Memo[int, int] = Memo(kept=3, size=lambda key: 1)
    for key in range(3):
        memo.put(key, key)
    memo.put(3, 3)
    assert dict(memo) == {3: 3}


def test_the_default_size_is_the_keys_size_in_json() -> None:
    viewer = Viewer(login="jdoe", name="Jane Doe")
    assert json_size((viewer, "utc", None)) == len(
        '[{"is_signed_in":false,"id":0,"login":"jdoe","email":"","name":"Jane Doe",'
        '"light_theme":false,"org_count":0,"org_id":0,"org_name":"","org_role":"",'
        '"is_grafana_admin":false,"timezone":"","locale":"",'
        '"has_edit_permission_in_folders":false},"utc",null]'
    )


def test_every_memory_of_the_service_stays_bounded_under_a_flood_of_large_distinct_groups(
    make_app: AppFactory,
) -> None:
    """Viewers, hosts, dashboards and variables all new and as large as a memory keeps, then
    larger: every memory the service holds keeps within its entries and bytes."""
    import gc
    import io
    import json

    from otel_panel_receiver.config import Settings
    from otel_panel_receiver.memo import BUDGET, KEPT
    from otel_panel_receiver.testing import sample_payload

    app = make_app(Settings(user_labels="pseudonymous"), stream=io.StringIO())
    doc = json.loads(sample_payload("v2-start.json"))
    rng = random.Random(7)
    for n in range(6_000):
        size = rng.choice([100, 1_000, 3_900, 9_000])  # some too large to keep
        doc["uuid"] = f"{n:08x}-0000-4000-8000-000000000000"
        doc["user"]["login"] = f"v{n}-" + "x" * size
        doc["host"]["hostname"] = f"h{n % 97}-" + "y" * (size // 4)
        doc["dashboard"]["name"] = f"d{n % 89}-" + "z" * (size // 8)
        doc["variables"][0]["values"] = [f"{n}-" + "w" * (size // 2)]
        app.receiver.handle(json.dumps(doc).encode())
    memories = [m for m in gc.get_objects() if type(m) is Memo]  # no lazy object woken
    assert len(memories) >= 10  # the decoder's, the recorder's, the log's, privacy, usage
    for memory in memories:
        assert len(memory) <= memory.kept <= KEPT
        assert memory._used <= BUDGET
