"""The resume ledger: stable, append-only planning of units."""

from __future__ import annotations

import pyarrow as pa

from pipeline.jobs.ledger import Ledger


def test_plan_is_stable_and_append_only(tmp_path):
    ledger = Ledger(tmp_path)
    ids = pa.array([f"c{i}" for i in range(10)])
    plan, added = ledger.extend_plan(ids, shard_size=4)
    assert added == 10 and plan["unit"].to_pylist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    again, added = Ledger(tmp_path).extend_plan(ids, shard_size=4)
    assert added == 0 and again.equals(plan)
    more = pa.array([f"c{i}" for i in range(13)])
    grown, added = ledger.extend_plan(more, shard_size=4)
    assert added == 3
    assert grown.slice(0, 10).equals(plan)
    assert grown["unit"].to_pylist()[10:] == [3, 3, 3]  # new rows never join old units
    assert grown["position"].to_pylist() == list(range(13))


def test_units_are_done_only_after_their_marker(tmp_path):
    ledger = Ledger(tmp_path)
    assert ledger.done_units() == set()
    ledger.record_unit(3, pa.table({"key": ["a"]}), pa.table({"clip_id": pa.array([], pa.string())}),
                       {"unit": 3, "rows": 1})
    assert ledger.done_units() == {3}
    assert ledger.unit_tables("index")["key"].to_pylist() == ["a"]
    assert ledger.unit_summaries() == [{"unit": 3, "rows": 1}]
