"""Running a shard-writing job (extract, synth-mix) over Ray: plan, resume, units written by workers, report.

A job supplies its input rows (keyed by `clip_id`: manifest rows, or mixture recipes) and a function that builds
the Ray Data graph over a window of pending rows: one task per unit that runs the job's stages and writes the
unit's shard itself (pipeline/jobs/assemble.py). This module does the rest, the same way for every job: the
append-only plan, skipping finished units, windows of whole units, the ledger entry of each unit whose result
comes back (the driver keeps the ledger; it never sees sample bytes), progress events and the final report.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from manifests import storage
from manifests.storage import Location
from pipeline.config import config_hash, to_dict
from pipeline.errors import OutputBusy, OutputNotWritable, PipelineError
from pipeline.jobs.assemble import UNWRITABLE, IndexFn, SampleFn, UnitResult
from pipeline.jobs.lease import held
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

__all__ = ["JobSpec", "RunOptions", "run_job", "run_locked", "output_lock", "open_output", "OutputBusy"]

WINDOW_ROWS = 20_000  # rows handed to one Ray Data execution; bounds what the driver holds
log = logging.getLogger("pipeline.jobs")


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
    out_dir: Location
    contract: FeatureContract
    config: Any                                 # the job's config dataclass (recorded, hashed)
    rows: pa.Table                              # input rows with a unique string column `clip_id`
    shard_size: int
    build_dataset: Callable[[pa.Table], Any]    # pending rows (unit, position, inputs) -> Ray dataset of results
    to_sample: SampleFn
    to_index: IndexFn
    source: str                                 # what the rows came from (report.json)
    placement: Callable[[], dict] = dict        # how the work would be placed (for --dry-run; after init_ray)


def open_output(out_dir: Location, job: str, contract: FeatureContract, config: Any) -> None:
    """A new folder gets dataset.json; an existing one must hold the same job made under the same contract."""
    folder = OutputDir(out_dir)
    if not folder.remote:
        folder.root.mkdir(parents=True, exist_ok=True)
    if storage.exists(folder.dataset_json):
        existing, doc = read_dataset_json(folder.root)
        if doc.get("job") != job:
            raise ContractError(f"{out_dir} holds a {doc.get('job')} output, not {job}: use a new --out folder")
        require_same([(f"the output {out_dir}", existing), (f"this {job} run", contract)],
                     "Use a new --out folder, or the same config and models as before.")
        return
    write_dataset_json(folder.root, contract, job=job, config=to_dict(config))


@dataclass(frozen=True)
class RunOptions:
    """How a run treats what an earlier run left: `verify` re-reads every finished shard's checksum (the size is
    always compared), `redo_changed` redoes finished units whose input rows were edited since they were made;
    `max_units` stops after that many units (resume tests); `window_rows` is how many rows one Ray Data execution
    takes (whole units); `limit` takes only the first N input rows (trying a config); `dry_run` plans and
    describes the work without writing anything."""

    verify: bool = False
    redo_changed: bool = False
    max_units: Optional[int] = None
    window_rows: int = WINDOW_ROWS
    limit: Optional[int] = None
    dry_run: bool = False


def run_job(spec: JobSpec, *, address: Optional[str] = None, progress: Optional[Callable[[dict], None]] = None,
            options: RunOptions = RunOptions()) -> dict[str, Any]:
    """Run or resume a job; returns its report (with `dry_run`: its plan). The output's lock (a lease on object
    storage) is taken before anything is written."""
    if options.dry_run:
        return dry_run(spec, address=address, options=options)
    with output_lock(spec.out_dir) as lease:
        open_output(spec.out_dir, spec.name, spec.contract, spec.config)
        return run_locked(spec, address=address, progress=progress, options=options, lease=lease)


def dry_run(spec: JobSpec, *, address: Optional[str], options: RunOptions) -> dict[str, Any]:
    """The plan of a run (units, rows, estimated bytes, placement); nothing is written, not even the plan."""
    from pipeline.jobs.dry_run import describe_plan
    from pipeline.jobs.ray_exec import init_ray

    rows = limited(spec.rows, options.limit)
    plan = describe_plan(spec.out_dir, rows, spec.shard_size, spec.contract, tasks=_tasks(rows),
                         max_units=options.max_units)
    where = init_ray(address)
    return {"job": spec.name, "dry_run": True, **plan, "where": where, "placement": spec.placement()}


def reject_share_exceeded(report: dict[str, Any], max_share: Optional[float]) -> Optional[str]:
    """The message when more than `max_share` of the job's rows are rejected (None when within it)."""
    counts = report["counts"]
    if max_share is None or not counts["rows"]:
        return None
    share = counts["rejected"] / counts["rows"]
    if share <= max_share:
        return None
    return (f"{counts['rejected']} of {counts['rows']} rows rejected ({share:.1%}), more than --max-reject-frac "
            f"{max_share:g}; see {report['out']}/rejects.parquet (the output and its report are written)")


@contextmanager
def output_lock(out_dir: Location) -> Iterator[Any]:
    """One writer per output: a second run (a scheduled one, a manual re-run) fails fast instead of interleaving
    units. Local folders: the OS's flock; object storage: a lease object (pipeline/jobs/lease.py)."""
    with writable(out_dir):
        with held(out_dir) as lease:
            try:
                yield lease
            finally:
                _remove_partial_shards(out_dir)


def _remove_partial_shards(out_dir: Location) -> None:
    """Local outputs: temporary shards a unit task left when the run stopped under it (the full disk that
    ended the run, a killed worker). Under the output's lock, so none belongs to a running writer."""
    folder = OutputDir(out_dir)
    if folder.remote or not (folder.root / "shards").is_dir():
        return
    for partial in (folder.root / "shards").glob(".*.tmp"):
        partial.unlink(missing_ok=True)


@contextmanager
def writable(out_dir: Location) -> Iterator[None]:
    """A full disk or a read-only folder is one clear message (finished shards stay; nothing is half-written)."""
    try:
        yield
    except OSError as e:
        if e.errno not in UNWRITABLE:
            raise
        raise OutputNotWritable(f"cannot write to {out_dir}: {e.strerror} ({e.filename or out_dir}). Free space "
                                f"or make the folder writable, then run again: finished shards are kept") from None


def run_locked(spec: JobSpec, *, address: Optional[str] = None, progress: Optional[Callable[[dict], None]] = None,
               options: RunOptions = RunOptions(), lease: Any = None) -> dict[str, Any]:
    """`run_job` for a caller that holds the output's lock and opened the output (synth-mix plans under it)."""
    started = time.time()
    rows = limited(spec.rows, options.limit)
    ledger = Ledger(spec.out_dir)
    plan, added = ledger.extend_plan(rows["clip_id"], spec.shard_size, _tasks(rows))
    hashes = input_hashes(rows)
    resume = check_finished(ledger, hashes, verify=options.verify, redo_changed=options.redo_changed)
    for unit in resume.redo:
        ledger.invalidate(unit)
    done = ledger.done_units()
    missing = _units_missing_rows(plan, rows, done)
    if missing and options.limit is None:
        raise PipelineError(f"the input no longer holds rows planned for unfinished units {missing[:5]} "
                            f"(rows removed?). Restore them, or start a new --out folder.")
    todo = _pending_rows(rows, plan, done | set(missing))   # with --limit: units beyond it wait for a full run
    stats = {"rows_total": spec.rows.num_rows, "rows_planned_new": added, "rows_todo": todo.num_rows,
             "units_total": len(unit_sizes(plan)), "units_done_before": len(done), "where": None,
             "limit": options.limit, **resume.stats()}
    if todo.num_rows:
        stats.update(_process(spec, ledger, plan, todo, hashes, address=address, progress=progress,
                              options=options, lease=lease))
    return finish_job(out_dir=spec.out_dir, job=spec.name, ledger=ledger, contract=spec.contract,
                      config=to_dict(spec.config), config_hash=config_hash(spec.config), started=started,
                      stats=stats, manifest=spec.source)


def limited(rows: pa.Table, limit: Optional[int]) -> pa.Table:
    if limit is None:
        return rows
    if limit < 1:
        raise PipelineError(f"--limit must be >= 1 (input rows to take), got {limit}")
    return rows.slice(0, limit)


def _tasks(rows: pa.Table) -> Optional[pa.Array]:
    """Each row's task, so that a unit (one shard) holds samples of one task; None when rows have no task."""
    return rows["task"].combine_chunks() if "task" in rows.column_names else None


class _Recorder:
    """The driver's side of finished units: check the accounting, write the ledger entry, count, report."""

    def __init__(self, ledger: Ledger, sizes: dict[int, int], hashes: dict[str, str], rows_todo: int,
                 progress: Optional[Callable[[dict], None]], lease: Any):
        self.ledger, self.sizes, self.hashes, self.rows_todo = ledger, sizes, hashes, rows_todo
        self.progress, self.lease = progress, lease
        self.units = self.rows = self.rejected = self.bytes_received = 0
        self.clip_seconds = 0.0

    def record(self, text: str, result: UnitResult) -> None:
        self.bytes_received += len(text)
        if result.unwritable:
            u = result.unwritable
            raise OSError(u["errno"], u["strerror"], u["filename"])
        summary = result.summary
        unit = result.unit
        if summary["rows"] != self.sizes[unit] or summary["kept"] + summary["rejected"] != summary["rows"]:
            raise PipelineError(f"unit {unit} came back with {summary['kept']} samples and {summary['rejected']} "
                                f"rejects for {self.sizes[unit]} planned rows: a bug, please report it")
        for line in result.errors:
            log.warning("unit %d: unexpected error in a stage (the row is rejected): %s", unit, line)
        ids = [r["key"] for r in result.index] + [r["clip_id"] for r in result.rejects]
        summary["inputs"] = {c: self.hashes[c] for c in ids}
        if self.lease is not None:
            self.lease.check()
        self.ledger.record_unit(unit, *result.tables(), summary)
        self.units += 1
        self.rows += summary["rows"]
        self.rejected += summary["rejected"]
        self.clip_seconds += summary["clip_seconds"]
        log.debug("unit %d: %d kept, %d rejected, %s", unit, summary["kept"], summary["rejected"], summary["shard"])
        if self.progress:
            self.progress({"rows_done": self.rows, "rows_todo": self.rows_todo, "unit": summary,
                           "units_written": self.units, "rejected": self.rejected})


def _process(spec: JobSpec, ledger: Ledger, plan: pa.Table, todo: pa.Table, hashes: dict[str, str], *, address,
             progress, options: RunOptions, lease: Any) -> dict[str, Any]:
    """Hand the pending units to the job's Ray Data graph, window by window; record each unit that comes back."""
    from pipeline.jobs.ray_exec import decode_result, init_ray

    where = init_ray(address, quiet=not log.isEnabledFor(logging.DEBUG))
    recorder = _Recorder(ledger, unit_sizes(plan), hashes, todo.num_rows, progress, lease)
    cpu_before = time.process_time()
    windows = 0
    for window in _windows(todo, options.max_units, options.window_rows):
        windows += 1
        for batch in spec.build_dataset(window).iter_batches(batch_size=None, batch_format="numpy",
                                                             prefetch_batches=1):
            for text in batch["result"]:
                recorder.record(text, decode_result(text))
    rows = max(recorder.rows, 1)
    return {"where": where, "units_written": recorder.units, "rows_processed": recorder.rows,
            "clip_seconds_processed": round(recorder.clip_seconds, 3), "windows": windows,
            "driver_cpu_s": round(time.process_time() - cpu_before, 3),
            "driver_bytes_per_row": round(recorder.bytes_received / rows, 1)}


def _pending_rows(rows: pa.Table, plan: pa.Table, done: set[int]) -> pa.Table:
    """Input rows whose unit is not finished, with their unit and plan position, in plan order."""
    todo = plan.filter(pc.invert(pc.is_in(plan["unit"], value_set=pa.array(sorted(done), pa.int64()))))
    return todo.join(rows, keys="clip_id", join_type="inner").sort_by([("unit", "ascending"),
                                                                       ("position", "ascending")])


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
