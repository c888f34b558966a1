"""The resume ledger: a durable plan of work units and a record of the units that are finished.

Its files live under OUT/_work/ (named by `stages.format.layout.OutputDir`, which also reads them):
  plan-NNNNN.parquet        one file per run that found new rows: (clip_id, unit, position)
  units/UUUUUU.index.parquet, UUUUUU.rejects.parquet, UUUUUU.done.json
                            a unit's results; `done.json` is written last, after its shard was published
  runs.jsonl                one line per finished run

A unit is a fixed group of input rows of one task and becomes exactly one shard. Planning only ever appends: a
re-run finds the same units (so it ends with the same keys in the same shards), and a manifest with extra rows
gets new units for those rows only. On object storage every ledger file is one PUT (runs.jsonl is rewritten
whole: the lease makes the driver its only writer).
"""

from __future__ import annotations

import io
import json
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests import storage
from manifests.storage import Location
from stages.format.layout import PLAN_SCHEMA, OutputDir


def write_table(location: Location, table: pa.Table) -> None:
    """A Parquet file written whole (atomic rename locally, one PUT on object storage)."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    storage.write_bytes(location, buffer.getvalue())


def plan_rows(plan: pa.Table, clip_ids: pa.Array, shard_size: int, tasks: Optional[pa.Array] = None) -> pa.Table:
    """The plan rows for ids not planned yet: units of at most `shard_size` rows, each holding rows of one task
    (`tasks`, aligned with `clip_ids`; tasks in order of first appearance, rows in input order within a task),
    numbered after the plan's units, positions running unit after unit. Writes nothing."""
    new = pc.invert(pc.is_in(clip_ids, value_set=plan["clip_id"]))
    new_ids = pc.filter(clip_ids, new).cast(pa.string()).to_pylist()
    if not new_ids:
        return PLAN_SCHEMA.empty_table()
    groups: dict[Any, list[str]] = {}
    new_tasks = pc.filter(tasks, new).to_pylist() if tasks is not None else [None] * len(new_ids)
    for clip_id, task in zip(new_ids, new_tasks):
        groups.setdefault(task, []).append(clip_id)
    unit = (pc.max(plan["unit"]).as_py() + 1) if len(plan) else 0
    position = (pc.max(plan["position"]).as_py() + 1) if len(plan) else 0
    ids, units, positions = [], [], []
    for members in groups.values():
        for start in range(0, len(members), shard_size):
            chunk = members[start:start + shard_size]
            ids += chunk
            units += [unit] * len(chunk)
            positions += range(position, position + len(chunk))
            unit, position = unit + 1, position + len(chunk)
    return pa.table({"clip_id": ids, "unit": pa.array(units, pa.int64()), "position": pa.array(positions, pa.int64())},
                    schema=PLAN_SCHEMA)


class Ledger(OutputDir):
    """The writing side of an output folder's `_work/` (on the driver: workers write shards, never the ledger)."""

    def __init__(self, out_dir: Location):
        super().__init__(out_dir)
        if not self.remote:
            self.units.mkdir(parents=True, exist_ok=True)

    def extend_plan(self, clip_ids: pa.Array, shard_size: int, tasks: Optional[pa.Array] = None
                    ) -> tuple[pa.Table, int]:
        """Give every id not yet planned a unit (`plan_rows`); returns (whole plan, rows added)."""
        plan = self.plan()
        added = plan_rows(plan, clip_ids, shard_size, tasks)
        if added.num_rows == 0:
            return plan, 0
        write_table(self.plan_file(len(self.plan_files())), added)
        return pa.concat_tables([plan, added]), added.num_rows

    def record_unit(self, unit: int, index: pa.Table, rejects: pa.Table, summary: dict[str, Any]) -> None:
        """Call after the unit's shard is published (renamed, or its upload completed); the done marker goes last."""
        write_table(self.unit_file(unit, "index.parquet"), index)
        write_table(self.unit_file(unit, "rejects.parquet"), rejects)
        storage.write_bytes(self.unit_file(unit, "done.json"), json.dumps(summary, sort_keys=True).encode())

    def invalidate(self, unit: int) -> None:
        """Forget that a unit is finished (its shard is damaged, or its inputs changed): the next pass redoes it."""
        storage.delete(self.unit_file(unit, "done.json"))

    def append_run(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        if not self.remote:
            with open(self.runs_log, "a") as f:
                f.write(line)
            return
        before = storage.read_bytes(self.runs_log) if storage.exists(self.runs_log) else b""   # no append: rewrite
        storage.write_bytes(self.runs_log, before + line.encode())
