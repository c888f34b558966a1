"""The resume ledger: a durable plan of work units and a record of the units that are finished.

Layout under OUT/_work/:
  plan-NNNNN.parquet        one file per run that found new rows: (clip_id, unit, position)
  units/UUUUUU.index.parquet, UUUUUU.rejects.parquet, UUUUUU.done.json
                            a unit's results; `done.json` is written last, after its shard was renamed

A unit is a fixed group of manifest rows and becomes exactly one shard. Planning only ever appends:
a re-run finds the same units (so it ends with the same keys in the same shards), and a manifest
with extra rows gets new units for those rows only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PLAN_SCHEMA = pa.schema([("clip_id", pa.string()), ("unit", pa.int64()), ("position", pa.int64())])


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_parquet(path: Path, table: pa.Table) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class Ledger:
    def __init__(self, out_dir: Path):
        self.work = Path(out_dir) / "_work"
        self.units_dir = self.work / "units"
        self.units_dir.mkdir(parents=True, exist_ok=True)

    # -- plan -------------------------------------------------------------------------------------------
    def plan(self) -> pa.Table:
        files = sorted(self.work.glob("plan-*.parquet"))
        if not files:
            return PLAN_SCHEMA.empty_table()
        return pa.concat_tables([pq.read_table(f, schema=PLAN_SCHEMA) for f in files])

    def extend_plan(self, clip_ids: pa.Array, shard_size: int) -> tuple[pa.Table, int]:
        """Give every id not yet planned a unit (in manifest order); returns (whole plan, rows added)."""
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
        generation = len(list(self.work.glob("plan-*.parquet")))
        atomic_write_parquet(self.work / f"plan-{generation:05d}.parquet", added)
        return pa.concat_tables([plan, added]), n

    # -- units ------------------------------------------------------------------------------------------
    def _unit_path(self, unit: int, suffix: str) -> Path:
        return self.units_dir / f"{unit:06d}.{suffix}"

    def done_units(self) -> set[int]:
        return {int(p.name.split(".")[0]) for p in self.units_dir.glob("*.done.json")}

    def record_unit(self, unit: int, index: pa.Table, rejects: pa.Table, summary: dict[str, Any]) -> None:
        """Call after the unit's shard is renamed into place; the done marker goes last."""
        atomic_write_parquet(self._unit_path(unit, "index.parquet"), index)
        atomic_write_parquet(self._unit_path(unit, "rejects.parquet"), rejects)
        atomic_write_bytes(self._unit_path(unit, "done.json"), json.dumps(summary, sort_keys=True).encode())

    def unit_summaries(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.units_dir.glob("*.done.json"))]

    def unit_tables(self, kind: str) -> Optional[pa.Table]:
        """Concatenate every finished unit's `index` or `rejects` table, in unit order."""
        files = [self._unit_path(u, f"{kind}.parquet") for u in sorted(self.done_units())]
        tables = [pq.read_table(f) for f in files if f.is_file()]
        tables = [t for t in tables if t.num_rows]
        return pa.concat_tables(tables, promote_options="default") if tables else None

    def append_run(self, record: dict[str, Any]) -> None:
        with open(self.work / "runs.jsonl", "a") as f:
            f.write(json.dumps(record, sort_keys=True, default=str) + "\n")

    def runs(self) -> list[dict[str, Any]]:
        path = self.work / "runs.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
