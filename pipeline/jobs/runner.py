"""Running a shard-writing job (extract, synth-mix) over Ray Data: plan, resume, assemble, report.

A job supplies its input rows (keyed by `clip_id`: manifest rows, or mixture recipes), a function that
builds the Ray Data graph over a window of those rows, and the two functions that turn a finished row
into a sample and an index row. This module does the rest, the same way for every job:
the append-only plan, skipping finished units, windows of whole units, streaming rows back to the
driver's UnitAssembler, progress events and the final report.
"""

from __future__ import annotations

import errno
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import config_hash, to_dict
from pipeline.errors import OutputBusy, OutputNotWritable, PipelineError
from pipeline.jobs.assemble import IndexFn, SampleFn, UnitAssembler
from pipeline.jobs.ledger import Ledger
from pipeline.jobs.report import finish_job
from pipeline.jobs.resume import check_finished, input_hashes
from stages.format.contract import (
    ContractError,
    FeatureContract,
    read_dataset_json,
    require_same,
    write_dataset_json,
)
from stages.format.layout import OutputDir

WINDOW_ROWS = 20_000  # rows handed to one Ray Data execution; bounds driver and object-store memory


def check_job_sizes(config: Any) -> None:
    """The sizes every shard-writing job's config has (shard_size, rows_per_task, cpu_stage_cpus, cpu_workers)."""
    if config.shard_size < 1:
        raise ValueError(f"shard_size must be >= 1 (rows per shard), got {config.shard_size}")
    if config.rows_per_task < 1:
        raise ValueError(f"rows_per_task must be >= 1, got {config.rows_per_task}")
    if not config.cpu_stage_cpus > 0:
        raise ValueError(f"cpu_stage_cpus must be > 0, got {config.cpu_stage_cpus}")
    if config.cpu_workers is not None and config.cpu_workers < 1:
        raise ValueError(f"cpu_workers must be >= 1 (or null: one per CPU), got {config.cpu_workers}")


@dataclass(frozen=True)
class JobSpec:
    name: str                                   # shard prefix and dataset.json "job": extract, synth-mix
    out_dir: Path
    contract: FeatureContract
    config: Any                                 # the job's config dataclass (recorded, hashed)
    rows: pa.Table                              # input rows with a unique string column `clip_id`
    shard_size: int
    build_dataset: Callable[[pa.Table], Any]    # window of pending rows -> ray.data.Dataset of finished rows
    to_sample: SampleFn
    to_index: IndexFn
    source: str                                 # what the rows came from (report.json)


def open_output(out_dir: Path, job: str, contract: FeatureContract, config: Any) -> None:
    """A new folder gets dataset.json; an existing one must hold the same job made under the same contract."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if OutputDir(out_dir).dataset_json.exists():
        existing, doc = read_dataset_json(out_dir)
        if doc.get("job") != job:
            raise ContractError(f"{out_dir} holds a {doc.get('job')} output, not {job}: use a new --out folder")
        require_same([(f"the output {out_dir}", existing), (f"this {job} run", contract)],
                     "Use a new --out folder, or the same config and models as before.")
        return
    write_dataset_json(out_dir, contract, job=job, config=to_dict(config))


@dataclass(frozen=True)
class RunOptions:
    """How a run treats what an earlier run left: `verify` re-reads every finished shard's checksum (the size is
    always compared), `redo_changed` redoes finished units whose input rows were edited since they were made;
    `max_units` stops after that many units (resume tests); `window_rows` is how many rows one Ray Data execution
    takes (whole units; it bounds the driver's and the object store's memory)."""

    verify: bool = False
    redo_changed: bool = False
    max_units: Optional[int] = None
    window_rows: int = WINDOW_ROWS


def run_job(spec: JobSpec, *, address: Optional[str] = None, progress: Optional[Callable[[dict], None]] = None,
            options: RunOptions = RunOptions()) -> dict[str, Any]:
    """Run or resume a job; returns its report. The output's lock is taken before anything is written."""
    with output_lock(spec.out_dir):
        open_output(spec.out_dir, spec.name, spec.contract, spec.config)
        return run_locked(spec, address=address, progress=progress, options=options)


@contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """One writer per output folder: a second run (a scheduled one, a manual re-run) fails fast instead of
    interleaving units. The lock is the OS's (flock), so a killed run leaves nothing to clean up."""
    from filelock import FileLock, Timeout

    path = OutputDir(out_dir).lock
    with writable(out_dir):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise OutputBusy(f"another run is writing {out_dir} (lock {path}); wait for it to finish, "
                             "or use another --out") from None
    try:
        with writable(out_dir):
            yield
    finally:
        lock.release()


@contextmanager
def writable(out_dir: Path) -> Iterator[None]:
    """A full disk or a read-only folder is one clear message (finished shards stay; nothing is half-written)."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        raise OutputNotWritable(f"cannot write to {out_dir}: {e.strerror} ({e.filename or out_dir}). Free space "
                                f"or make the folder writable, then run again: finished shards are kept") from None


def run_locked(spec: JobSpec, *, address: Optional[str] = None, progress: Optional[Callable[[dict], None]] = None,
               options: RunOptions = RunOptions()) -> dict[str, Any]:
    """`run_job` for a caller that holds the output's lock and opened the output (synth-mix plans under it)."""
    started = time.time()
    ledger = Ledger(spec.out_dir)
    plan, added = ledger.extend_plan(spec.rows["clip_id"], spec.shard_size)
    hashes = input_hashes(spec.rows)
    resume = check_finished(ledger, hashes, verify=options.verify, redo_changed=options.redo_changed)
    for unit in resume.redo:
        ledger.invalidate(unit)
    done = ledger.done_units()
    missing = _units_missing_rows(plan, spec.rows, done)
    if missing:
        raise PipelineError(f"the input no longer holds rows planned for unfinished units {missing[:5]} "
                            f"(rows removed?). Restore them, or start a new --out folder.")
    todo = _pending_rows(spec.rows, plan, done)
    stats = {"rows_total": spec.rows.num_rows, "rows_planned_new": added, "rows_todo": todo.num_rows,
             "units_total": len(unit_sizes(plan)), "units_done_before": len(done), "where": None,
             **resume.stats()}
    if todo.num_rows:
        stats.update(_process(spec, ledger, plan, todo, hashes, address=address, progress=progress,
                              options=options))
    return finish_job(out_dir=spec.out_dir, job=spec.name, ledger=ledger, contract=spec.contract,
                      config=to_dict(spec.config), config_hash=config_hash(spec.config), started=started,
                      stats=stats, manifest=spec.source)


def _process(spec: JobSpec, ledger: Ledger, plan: pa.Table, todo: pa.Table, hashes: dict[str, str], *, address,
             progress, options: RunOptions) -> dict[str, Any]:
    """Stream the pending rows through the job's Ray Data graph, window by window, into shards."""
    from pipeline.jobs.ray_exec import batch_to_rows, init_ray

    where = init_ray(address)
    assembler = UnitAssembler(job=spec.name, contract=spec.contract, ledger=ledger, unit_sizes=unit_sizes(plan),
                              positions=dict(zip(todo["clip_id"].to_pylist(), todo["position"].to_pylist())),
                              input_hashes=hashes, to_sample=spec.to_sample, to_index=spec.to_index)
    units_written = rows_processed = 0
    clip_seconds = 0.0
    windows = 0
    for window in _windows(todo, options.max_units, options.window_rows):
        windows += 1
        for batch in spec.build_dataset(window).iter_batches(batch_size=None, batch_format="numpy",
                                                             prefetch_batches=1):
            for row in batch_to_rows(batch):
                summary = assembler.add(row)
                if summary is None:
                    continue
                units_written += 1
                rows_processed += summary["rows"]
                clip_seconds += summary["clip_seconds"]
                if progress:
                    progress({"rows_done": assembler.rows_done, "rows_todo": todo.num_rows, "unit": summary,
                              "units_written": units_written})
    return {"where": where, "units_written": units_written, "rows_processed": rows_processed,
            "clip_seconds_processed": round(clip_seconds, 3), "windows": windows}


def _pending_rows(rows: pa.Table, plan: pa.Table, done: set[int]) -> pa.Table:
    """Input rows whose unit is not finished, with their unit and plan position, in plan order."""
    todo = plan.filter(pc.invert(pc.is_in(plan["unit"], value_set=pa.array(sorted(done), pa.int64()))))
    return todo.join(rows, keys="clip_id", join_type="inner").sort_by("position")


def unit_sizes(plan: pa.Table) -> dict[int, int]:
    """Rows planned per unit."""
    counts = plan.group_by("unit").aggregate([("clip_id", "count")])
    return dict(zip(counts["unit"].to_pylist(), counts["clip_id_count"].to_pylist()))


def _units_missing_rows(plan: pa.Table, rows: pa.Table, done: set[int]) -> list[int]:
    absent = plan.filter(pc.invert(pc.is_in(plan["clip_id"], value_set=rows["clip_id"])))
    return sorted({u for u in absent["unit"].to_pylist() if u not in done})


def _windows(todo: pa.Table, max_units: Optional[int], window_rows: int):
    """Slices of whole units, about `window_rows` rows each (optionally only the first `max_units` units)."""
    if max_units is not None:
        keep = np.unique(todo["unit"].to_numpy())[:max_units]
        todo = todo.filter(pc.is_in(todo["unit"], value_set=pa.array(keep)))
    units = todo["unit"].to_numpy()
    start = 0
    while start < len(units):
        end = min(start + window_rows, len(units))
        while end < len(units) and units[end] == units[end - 1]:
            end += 1  # never split a unit across windows
        yield todo.slice(start, end - start)
        start = end
