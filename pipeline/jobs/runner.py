"""Running a shard-writing job (extract, synth-mix) over Ray Data: plan, resume, assemble, report.

A job supplies its input rows (keyed by `clip_id`: manifest rows, or mixture recipes), a function that
builds the Ray Data graph over a window of those rows, and the two functions that turn a finished row
into a sample and an index row. This module does the rest, the same way for every job:
the append-only plan, skipping finished units, windows of whole units, streaming rows back to the
driver's UnitAssembler, progress events and the final report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import config_hash, to_dict
from pipeline.errors import OutputBusy, PipelineError
from pipeline.jobs.assemble import IndexFn, SampleFn, UnitAssembler
from pipeline.jobs.ledger import Ledger
from pipeline.jobs.report import finish_job
from stages.format.contract import (
    ContractError,
    FeatureContract,
    read_dataset_json,
    require_same,
    write_dataset_json,
)
from stages.format.layout import OutputDir

WINDOW_ROWS = 20_000  # rows handed to one Ray Data execution; bounds driver and object-store memory


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


def run_job(spec: JobSpec, *, address: Optional[str] = None, progress: Optional[Callable[[dict], None]] = None,
            max_units: Optional[int] = None) -> dict[str, Any]:
    """Run or resume a job; returns its report. `max_units` stops after that many units (resume tests)."""
    started = time.time()
    open_output(spec.out_dir, spec.name, spec.contract, spec.config)
    lock = output_lock(spec.out_dir)
    try:
        return _run_locked(spec, started, address=address, progress=progress, max_units=max_units)
    finally:
        lock.release()


def output_lock(out_dir: Path):
    """One writer per output folder: a second run (a scheduled one, a manual re-run) fails fast instead of
    interleaving units. The lock is the OS's (flock), so a killed run leaves nothing to clean up."""
    from filelock import FileLock, Timeout

    path = OutputDir(out_dir).lock
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputBusy(f"another run is writing {out_dir} (lock {path}); wait for it to finish, "
                         "or use another --out") from None
    return lock


def _run_locked(spec: JobSpec, started: float, *, address, progress, max_units) -> dict[str, Any]:
    ledger = Ledger(spec.out_dir)
    plan, added = ledger.extend_plan(spec.rows["clip_id"], spec.shard_size)
    done = ledger.done_units()
    missing = _units_missing_rows(plan, spec.rows, done)
    if missing:
        raise PipelineError(f"the input no longer holds rows planned for unfinished units {missing[:5]} "
                            f"(rows removed?). Restore them, or start a new --out folder.")
    todo = _pending_rows(spec.rows, plan, done)
    sizes = unit_sizes(plan)
    stats = {"rows_total": spec.rows.num_rows, "rows_planned_new": added, "rows_todo": todo.num_rows,
             "units_total": len(sizes), "units_done_before": len(done), "where": None}
    if todo.num_rows:
        from pipeline.jobs.ray_exec import batch_to_rows, init_ray

        stats["where"] = init_ray(address)
        assembler = UnitAssembler(job=spec.name, contract=spec.contract, ledger=ledger,
                                  unit_sizes=sizes,
                                  positions=dict(zip(todo["clip_id"].to_pylist(), todo["position"].to_pylist())),
                                  to_sample=spec.to_sample, to_index=spec.to_index)
        units_written = rows_processed = 0
        clip_seconds = 0.0
        for window in _windows(todo, max_units):
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
        stats.update(units_written=units_written, rows_processed=rows_processed,
                     clip_seconds_processed=round(clip_seconds, 3))
    return finish_job(out_dir=spec.out_dir, job=spec.name, ledger=ledger, contract=spec.contract,
                      config=to_dict(spec.config), config_hash=config_hash(spec.config), started=started,
                      stats=stats, manifest=spec.source)


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


def _windows(todo: pa.Table, max_units: Optional[int]):
    """Slices of whole units, about WINDOW_ROWS rows each (optionally only the first `max_units` units)."""
    if max_units is not None:
        keep = np.unique(todo["unit"].to_numpy())[:max_units]
        todo = todo.filter(pc.is_in(todo["unit"], value_set=pa.array(keep)))
    units = todo["unit"].to_numpy()
    start = 0
    while start < len(units):
        end = min(start + WINDOW_ROWS, len(units))
        while end < len(units) and units[end] == units[end - 1]:
            end += 1  # never split a unit across windows
        yield todo.slice(start, end - start)
        start = end
