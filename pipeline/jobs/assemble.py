"""The driver side of a job: rows stream in, each finished unit becomes one shard plus its ledger entry.

Rows of a unit are written in plan order, whatever order they arrived in, so shards are identical
across runs. Every row ends in exactly one place: the unit's shard or its rejects.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Optional

import pyarrow as pa

from pipeline.jobs.ledger import Ledger
from stages.base import Row, is_alive, mark_rejected
from stages.format.contract import FeatureContract, check_sample
from stages.format.layout import file_checksum, shard_entry
from stages.format.shard_io import AtomicShardWriter, sample_members

REJECT_SCHEMA = pa.schema([("clip_id", pa.string()), ("unit", pa.int64()), ("stage", pa.string()),
                           ("reason", pa.string()), ("detail", pa.string())])

SampleFn = Callable[[Row], tuple[dict[str, Any], dict[str, Any], Optional[bytes]]]
"""row -> (meta for K.json, arrays by member name, flac bytes)."""

IndexFn = Callable[[Row, dict[str, Any]], dict[str, Any]]
"""(row, meta) -> extra index columns."""


class UnitAssembler:
    """Rows of a unit come in any order; once all have arrived the unit is written: one shard, its checksum, its
    index and reject rows, and the ledger entry (which also records a hash of each input row, so a re-run can tell
    which rows of a finished unit were edited since)."""

    def __init__(self, *, job: str, contract: FeatureContract, ledger: Ledger, unit_sizes: dict[int, int],
                 positions: dict[str, int], input_hashes: dict[str, str], to_sample: SampleFn, to_index: IndexFn):
        self.job, self.contract, self.ledger = job, contract, ledger
        self.unit_sizes, self.positions, self.input_hashes = unit_sizes, positions, input_hashes
        self.to_sample, self.to_index = to_sample, to_index
        self.pending: dict[int, list[Row]] = collections.defaultdict(list)
        self.rows_done = 0

    def add(self, row: Row) -> Optional[dict[str, Any]]:
        unit = int(row["unit"])
        self.pending[unit].append(row)
        if len(self.pending[unit]) < self.unit_sizes[unit]:
            return None
        return self._finish(unit, self.pending.pop(unit))

    @property
    def buffered_rows(self) -> int:
        return sum(len(v) for v in self.pending.values())

    def _finish(self, unit: int, rows: list[Row]) -> dict[str, Any]:
        rows.sort(key=lambda r: self.positions[r["clip_id"]])
        entry = shard_entry(self.job, unit)
        index_rows, reject_rows = [], []
        with AtomicShardWriter(self.ledger.root / entry) as writer:
            for row in rows:
                members = self._members(row) if is_alive(row) else None
                if members is None:
                    reject_rows.append({"clip_id": row["clip_id"], "unit": unit, "stage": row["reject_stage"],
                                        "reason": row["reject_reason"], "detail": row.get("reject_detail") or ""})
                    continue
                before = writer.bytes
                writer.write(members[0])
                index_rows.append({"key": row["clip_id"], "shard": entry, "unit": unit,
                                   **self.to_index(row, members[1]), "bytes": writer.bytes - before})
        path = self.ledger.root / entry
        shard = {"shard_size": path.stat().st_size, "shard_sha256": file_checksum(path)}
        for r in index_rows:
            r.update(shard)
        summary = {
            "unit": unit, "shard": entry, **shard, "rows": len(rows), "kept": len(index_rows),
            "rejected": len(reject_rows), "bytes": writer.bytes,
            "clip_seconds": sum(float(r.get("duration_s") or 0.0) for r in index_rows),
            "stage_seconds": stage_seconds(rows),
            "reasons": dict(collections.Counter(f"{r['stage']}/{r['reason']}" for r in reject_rows)),
            "inputs": {r["clip_id"]: self.input_hashes[r["clip_id"]] for r in rows},
        }
        self.ledger.record_unit(unit, pa.Table.from_pylist(index_rows),
                                pa.Table.from_pylist(reject_rows, schema=REJECT_SCHEMA), summary)
        self.rows_done += len(rows)
        return summary

    def _members(self, row: Row) -> Optional[tuple[dict[str, bytes], dict[str, Any]]]:
        """The sample's tar members and metadata; None (the row marked rejected) when it cannot be written."""
        try:
            meta, arrays, flac = self.to_sample(row)
            problems = check_sample(meta, arrays, self.contract)
            if problems:
                mark_rejected(row, "write", "contract_violation", "; ".join(problems))
                return None
            return sample_members(row["clip_id"], meta, arrays, flac), meta
        except Exception as e:  # noqa: BLE001 - one sample that cannot be serialised must not end the job
            mark_rejected(row, "write", "unwritable_sample", f"{type(e).__name__}: {e}")
            return None


def stage_seconds(rows: list[Row]) -> dict[str, float]:
    """Seconds each stage spent on these rows (the rows carry t_<stage>)."""
    seconds: collections.Counter = collections.Counter()
    for row in rows:
        for key, value in row.items():
            if key.startswith("t_") and value is not None:
                seconds[key[2:]] += float(value)
    return dict(seconds)
