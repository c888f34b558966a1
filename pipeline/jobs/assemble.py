"""The worker side of a job: a unit's rows, finished in plan order, stream into its one shard.

A unit (one shard) is written by the worker that processes its rows: `make_unit` runs the job's stages over the
unit's input rows in chunks of `rows_per_chunk`, in plan order, and streams each finished sample into the shard
(`UnitWriter`), so only one chunk's samples are ever in memory and shards are identical across runs. What goes
back to the driver is a `UnitResult`: the shard's name, size and sha256, the index rows, the reject rows and the
unit's counters, never sample bytes. Every row of the unit ends in exactly one place: its shard or its rejects.
"""

from __future__ import annotations

import collections
import errno
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import pyarrow as pa

from manifests.storage import Location
from stages.base import Row, is_alive, mark_rejected
from stages.format.contract import FeatureContract, check_sample
from stages.format.layout import OutputDir, shard_entry
from stages.format.shard_io import AtomicShardWriter, sample_members

REJECT_SCHEMA = pa.schema([("clip_id", pa.string()), ("unit", pa.int64()), ("stage", pa.string()),
                           ("reason", pa.string()), ("detail", pa.string())])

SampleFn = Callable[[Row], tuple[dict[str, Any], dict[str, Any], Optional[bytes]]]
"""row -> (meta for K.json, arrays by member name, flac bytes)."""

IndexFn = Callable[[Row, dict[str, Any]], dict[str, Any]]
"""(row, meta) -> extra index columns."""

UNWRITABLE = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
ERRORS_KEPT = 5        # unexpected-error tracebacks a unit sends to the job log


@dataclass(frozen=True)
class UnitWork:
    """Everything a worker needs to turn units into shards; pickled once per Ray task."""

    job: str
    out_root: Location
    contract: FeatureContract
    to_sample: SampleFn
    to_index: IndexFn
    stages: tuple                    # run in order over each chunk (set up once per worker process)
    rows_per_chunk: int
    drop: tuple = ("audio", "frames")   # row keys never needed after the stages (decoded audio, frames)
    stage_key: str = ""               # identifies `stages` for the per-process set-up cache


@dataclass
class UnitResult:
    """What the driver receives for one unit: small, whatever the samples weigh."""

    unit: int
    summary: dict[str, Any]
    index: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)      # unexpected stage errors, for the job log
    unwritable: Optional[dict[str, Any]] = None           # the output refused a write (full disk, read-only)

    def tables(self) -> tuple[pa.Table, pa.Table]:
        return pa.Table.from_pylist(self.index), pa.Table.from_pylist(self.rejects, schema=REJECT_SCHEMA)


class UnitWriter:
    """One unit's shard, written as its rows arrive in plan order; `finish()` publishes it and says what it holds."""

    def __init__(self, *, job: str, out_root: Location, unit: int, contract: FeatureContract,
                 to_sample: SampleFn, to_index: IndexFn):
        self.unit, self.contract = unit, contract
        self.to_sample, self.to_index = to_sample, to_index
        self.entry = shard_entry(job, unit)
        self.writer = AtomicShardWriter(OutputDir(out_root).at(self.entry))
        self.index: list[dict[str, Any]] = []
        self.rejects: list[dict[str, Any]] = []
        self.seconds: collections.Counter = collections.Counter()
        self.clip_seconds = 0.0
        self.rows = 0

    def add(self, rows: Sequence[Row]) -> None:
        """Rows finished by the stages, in plan order: each becomes a sample in the shard or a reject row."""
        for row in rows:
            self.rows += 1
            self.seconds.update({k[2:]: float(v) for k, v in row.items() if k.startswith("t_") and v is not None})
            members = self._members(row) if is_alive(row) else None
            if members is None:
                self.rejects.append({"clip_id": row["clip_id"], "unit": self.unit, "stage": row["reject_stage"],
                                     "reason": row["reject_reason"], "detail": row.get("reject_detail") or ""})
                continue
            before = self.writer.bytes
            self.writer.write(members[0])
            index = {"key": row["clip_id"], "shard": self.entry, "unit": self.unit,
                     **self.to_index(row, members[1]), "bytes": self.writer.bytes - before}
            self.clip_seconds += float(index.get("duration_s") or 0.0)
            self.index.append(index)

    def finish(self) -> UnitResult:
        self.writer.close()
        shard = {"shard_size": self.writer.size, "shard_sha256": self.writer.sha256}
        for row in self.index:
            row.update(shard)
        summary = {"unit": self.unit, "shard": self.entry, **shard, "rows": self.rows, "kept": len(self.index),
                   "rejected": len(self.rejects), "bytes": self.writer.bytes, "clip_seconds": self.clip_seconds,
                   "stage_seconds": dict(self.seconds),
                   "reasons": dict(collections.Counter(f"{r['stage']}/{r['reason']}" for r in self.rejects))}
        return UnitResult(self.unit, summary, self.index, self.rejects)

    def abort(self) -> None:
        self.writer.abort()

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


def make_unit(unit: int, rows: Sequence[Row], work: UnitWork, stages: Sequence[Callable]) -> UnitResult:
    """Run `stages` over a unit's input rows (plan order), chunk by chunk, streaming the samples into its shard.
    A write the output refuses (full disk, read-only, no permission) comes back as `unwritable`, not a crash."""
    started = time.perf_counter()
    writer = None
    try:
        writer = UnitWriter(job=work.job, out_root=work.out_root, unit=unit, contract=work.contract,
                            to_sample=work.to_sample, to_index=work.to_index)
        errors: list[str] = []
        for i in range(0, len(rows), work.rows_per_chunk):
            chunk = [dict(r) for r in rows[i:i + work.rows_per_chunk]]
            for stage in stages:
                chunk = stage(chunk)
            for row in chunk:
                for key in work.drop:
                    row.pop(key, None)
                if row.get("reject_reason") == "unexpected_error" and len(errors) < ERRORS_KEPT:
                    errors.append(f"{row['clip_id']}: {row.get('reject_stage')}: {row.get('reject_detail')}")
            writer.add(chunk)
        result = writer.finish()
    except OSError as e:
        if writer is not None:
            writer.abort()
        if e.errno not in UNWRITABLE:
            raise
        return UnitResult(unit, {"unit": unit}, unwritable={"errno": e.errno, "strerror": e.strerror,
                                                            "filename": str(e.filename or work.out_root)})
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    result.errors = errors
    result.summary["worker_seconds"] = round(time.perf_counter() - started, 3)
    return result


def describe_error(error: BaseException) -> str:
    """One exception as the job log shows it: type, message and the innermost frame."""
    frame = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
    where = f" ({frame[0].filename}:{frame[0].lineno})" if frame else ""
    return f"{type(error).__name__}: {error}{where}"
