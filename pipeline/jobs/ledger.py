"""The resume ledger: a durable plan of work units and a record of the units that are finished.

Its files live under OUT/_work/ (named by `stages.format.layout.OutputDir`, which also reads them):
  plan-NNNNN.parquet        one file per run that found new rows: (clip_id, unit, position)
  units/UUUUUU.index.parquet, UUUUUU.rejects.parquet, UUUUUU.done.json
                            a unit's results; `done.json` is written last, after its shard was renamed
  runs.jsonl                one line per finished run

A unit is a fixed group of input rows and becomes exactly one shard. Planning only ever appends: a re-run finds
the same units (so it ends with the same keys in the same shards), and a manifest with extra rows gets new units
for those rows only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from manifests.atomic import atomic_write_bytes, atomic_write_parquet
from stages.format.layout import PLAN_SCHEMA, OutputDir


class Ledger(OutputDir):
    """The writing side of an output folder's `_work/` (creates it on first use)."""

    def __init__(self, out_dir: Path):
        super().__init__(Path(out_dir))
        self.units.mkdir(parents=True, exist_ok=True)

    def extend_plan(self, clip_ids: pa.Array, shard_size: int) -> tuple[pa.Table, int]:
        """Give every id not yet planned a unit (in input order); returns (whole plan, rows added)."""
        plan = self.plan()
        new_ids = pc.filter(clip_ids, pc.invert(pc.is_in(clip_ids, value_set=plan["clip_id"])))
        if len(new_ids) == 0:
            return plan, 0
        first_unit = (pc.max(plan["unit"]).as_py() + 1) if len(plan) else 0
        first_position = (pc.max(plan["position"]).as_py() + 1) if len(plan) else 0
        n = len(new_ids)
        positions = pa.array(range(first_position, first_position + n), pa.int64())
        units = pa.array([first_unit + i // shard_size for i in range(n)], pa.int64())
        added = pa.table({"clip_id": new_ids.cast(pa.string()), "unit": units, "position": positions},
                         schema=PLAN_SCHEMA)
        atomic_write_parquet(self.plan_file(len(self.plan_files())), added)
        return pa.concat_tables([plan, added]), n

    def record_unit(self, unit: int, index: pa.Table, rejects: pa.Table, summary: dict[str, Any]) -> None:
        """Call after the unit's shard is renamed into place; the done marker goes last."""
        atomic_write_parquet(self.unit_file(unit, "index.parquet"), index)
        atomic_write_parquet(self.unit_file(unit, "rejects.parquet"), rejects)
        atomic_write_bytes(self.unit_file(unit, "done.json"), json.dumps(summary, sort_keys=True).encode())

    def invalidate(self, unit: int) -> None:
        """Forget that a unit is finished (its shard is damaged, or its inputs changed): the next pass redoes it."""
        self.unit_file(unit, "done.json").unlink(missing_ok=True)

    def append_run(self, record: dict[str, Any]) -> None:
        with open(self.runs_log, "a") as f:
            f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
