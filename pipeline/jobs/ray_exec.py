"""Running `stages/` objects under Ray: connecting to Ray, numpy batches <-> rows, units as tasks, stages as actors.

Stages see plain row dicts; this adapter is the only code that knows Ray Data's batch format.
Work goes out as one Ray Data row per unit (its input rows as Arrow IPC bytes) to `make_units`, a task that runs
the unit's stages and writes its shard (pipeline/jobs/assemble.py) and returns the unit's result as JSON. Stages
are set up once per worker process (`ready_stages`), so a task costs no model loading after the first.
Where stages run elsewhere (the encoders of the split placement, actors with a GPU each), rows cross to them as
a batch whose arrays are `.npy` bytes: Ray's tensor columns cannot unify arrays that differ in shape or nullness.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import pyarrow as pa

from manifests import storage
from manifests.atomic import atomic_write_text
from pipeline.jobs.assemble import UnitResult, UnitWork, make_unit
from stages.base import Row, Stage
from stages.format.shard_io import load_npy, npy_bytes

NPY_MAGIC = b"\x93NUMPY"


def _plain(value: Any) -> Any:
    if isinstance(value, bytes) and value[:6] == NPY_MAGIC:
        return load_npy(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None  # Arrow nulls come back as NaN in float columns
    return value


def batch_to_rows(batch: dict[str, np.ndarray]) -> list[Row]:
    if not batch:
        return []
    n = len(next(iter(batch.values())))
    return [{key: _plain(column[i]) for key, column in batch.items()} for i in range(n)]


def rows_to_batch(rows: Sequence[Row], drop: Iterable[str] = ()) -> dict[str, np.ndarray]:
    dropped = set(drop)
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(k for k in row if k not in dropped))
    batch = {}
    for key in keys:
        column = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows):
            value = row.get(key)
            column[i] = npy_bytes(value) if isinstance(value, np.ndarray) else value
        batch[key] = column
    return batch


def run_stages(batch: dict[str, np.ndarray], *, stages: Sequence[Stage], drop: Sequence[str] = ()) -> dict:
    """Task form: the stages are set up on first use inside this worker call."""
    rows = batch_to_rows(batch)
    for stage in stages:
        rows = stage(rows)
    return rows_to_batch(rows, drop)


class StageActor:
    """Actor form: stages are set up once per actor (models loaded once), then reused for every batch."""

    def __init__(self, stages: Sequence[Stage], drop: Sequence[str] = ()):
        self.stages = list(stages)
        self.drop = tuple(drop)
        for stage in self.stages:
            stage(())  # runs setup() now, so a broken model fails the pool at start, not mid-stream

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_stages(batch, stages=self.stages, drop=self.drop)

    def run(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self(batch)


class RemoteStages:
    """Stages served by actors elsewhere (the split placement's encoders, a GPU each), called like a stage from
    inside a unit's task: a chunk's rows go to one actor and come back with its features. Consecutive calls
    go to the actors in turn, starting from the caller's process, so unit tasks spread over the pool."""

    def __init__(self, actors: Sequence[Any], drop: Sequence[str] = ()):
        self.actors, self.drop = list(actors), tuple(drop)
        self.turn = os.getpid()

    def __call__(self, rows: Sequence[Row]) -> list[Row]:
        import ray

        if not rows:
            return []
        self.turn += 1
        actor = self.actors[self.turn % len(self.actors)]
        return batch_to_rows(ray.get(actor.run.remote(rows_to_batch(rows, self.drop))))


def stage_pool(stages: Sequence[Stage], *, size: int, drop: Sequence[str] = (), **resources) -> list:
    """`size` StageActors holding `stages` (a GPU each with num_gpus=1), restarted when their process dies."""
    import ray

    cls = ray.remote(StageActor).options(max_restarts=-1, max_task_retries=-1, **resources)
    return [cls.remote(list(stages), list(drop)) for _ in range(size)]


# ----------------------------------------------------------------------------------------------------------------------
# Units as tasks

_READY: dict[str, list] = {}   # stage_key -> set-up stages of this worker process (the last job's only)


def ready_stages(work: UnitWork) -> list:
    """The work's stages, set up once per worker process (models loaded once), kept for its next units."""
    if work.stage_key not in _READY:
        stages = list(work.stages)
        for stage in stages:
            stage(())   # runs setup()
        _READY.clear()
        _READY[work.stage_key] = stages
    return _READY[work.stage_key]


def make_units(batch: dict[str, np.ndarray], *, work: UnitWork) -> dict[str, np.ndarray]:
    """Ray Data task: each row is a unit (`unit`, `rows` as Arrow IPC) -> its shard written, its result as JSON."""
    results = []
    for unit, blob in zip(batch["unit"], batch["rows"]):
        rows = pa.ipc.open_stream(bytes(blob)).read_all().to_pylist()
        result = make_unit(int(unit), rows, work, ready_stages(work))
        results.append(json.dumps(dataclasses.asdict(result), default=_plain_json))
    return {"unit": np.asarray(batch["unit"], dtype=np.int64), "result": np.array(results, dtype=object)}


def _plain_json(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)


def unit_rows(units: pa.Table) -> pa.Table:
    """Pending input rows (with `unit`, in plan order) -> one row per unit: (unit, rows as Arrow IPC bytes)."""
    blobs, numbers = [], []
    unit_column = units["unit"].to_numpy()
    start = 0
    while start < len(unit_column):
        end = start
        while end < len(unit_column) and unit_column[end] == unit_column[start]:
            end += 1
        sink = pa.BufferOutputStream()
        part = units.slice(start, end - start)
        with pa.ipc.new_stream(sink, part.schema) as writer:
            writer.write_table(part)
        blobs.append(sink.getvalue().to_pybytes())
        numbers.append(int(unit_column[start]))
        start = end
    return pa.table({"unit": pa.array(numbers, pa.int64()), "rows": pa.array(blobs, pa.binary())})


def unit_dataset(units: pa.Table, work: UnitWork, *, num_cpus: float, concurrency: int, remote: bool = False):
    """The Ray Data graph of one window: a task per unit (at most `concurrency` at once), each writing its shard.
    With `remote` (the job reads or writes object storage), this process's object-store settings (endpoint,
    region; never credentials) are forwarded to the workers."""
    import ray

    table = unit_rows(units)
    ds = ray.data.from_arrow([table.slice(i, 1) for i in range(table.num_rows)])
    env = storage.storage_env() if remote or storage.is_url(work.out_root) else {}
    extra = {"runtime_env": {"env_vars": env}} if env else {}
    return ds.map_batches(make_units, fn_kwargs={"work": work}, batch_size=1, num_cpus=num_cpus,
                          compute=ray.data.TaskPoolStrategy(size=max(1, concurrency)), **extra)


def decode_result(text: str) -> UnitResult:
    return UnitResult(**json.loads(text))

def init_ray(address: Optional[str] = None, *, num_cpus: Optional[int] = None, quiet: bool = True) -> str:
    """Start or join Ray once per process; returns a short description of where we run.

    An embedded Ray (no address) listens on 127.0.0.1 only, and first ends what a killed earlier embedded run
    left behind (`end_orphaned_embedded_ray`).
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return "ray (already initialised)"
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=not quiet)
        where = f"ray cluster at {address}"
    else:
        end_orphaned_embedded_ray()
        _keep_on_loopback()
        # address="local": always a new instance. Without it ray.init joins the latest cluster that `ray start`
        # (or another user's test cluster) left on this machine, and that cluster's end kills this job.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level=logging.WARNING, log_to_driver=not quiet, configure_logging=True)
        _record_embedded_ray()
        where = f"embedded ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False       # the driver shows one progress bar of its own
    context.print_on_execution_start = False
    context.verbose_progress = False
    return where


def _keep_on_loopback() -> None:
    """Every socket of the embedded Ray (GCS, raylet, workers, agents) on 127.0.0.1.

    Ray replaces a loopback node address with the machine's own (and then listens on every interface) unless
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0. It reads that variable once, when ray is first imported, which may be
    before this call: so both the variable (for the processes Ray starts) and the constant it was read into are set.
    """
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


# ----------------------------------------------------------------------------------------------------------------------
# Processes a killed driver leaves behind
#
# A driver killed with SIGKILL takes its GCS and raylet with it, but Ray's dashboard and runtime-env agents outlive
# it (re-parented to init, holding ports and memory). Each embedded start records its processes (pid and start
# time) in a file named after the driver; the next start ends, by pid, the recorded processes of drivers that are
# gone, and nothing else: a live driver's Ray is never touched, nor any process not recorded.

EMBEDDED_RECORDS = Path(tempfile.gettempdir()) / "vssflow-embedded-ray"


def _same_process(pid: int, create_time: float):
    """The psutil.Process with this pid and start time, or None (ended, or the pid reused)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return process if abs(process.create_time() - create_time) < 1e-3 else None
    except psutil.Error:
        return None


def _record_embedded_ray() -> None:
    import psutil

    me = psutil.Process()
    processes = [{"pid": p.pid, "create_time": p.create_time()} for p in me.children(recursive=True)]
    record = EMBEDDED_RECORDS / f"{me.pid}.json"
    EMBEDDED_RECORDS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, json.dumps({"driver": {"pid": me.pid, "create_time": me.create_time()},
                                          "processes": processes}))
    atexit.register(record.unlink, missing_ok=True)


def end_orphaned_embedded_ray() -> list[int]:
    """End the recorded Ray processes of embedded runs whose driver is gone; returns the pids ended."""
    import psutil

    ended = []
    for record in sorted(EMBEDDED_RECORDS.glob("*.json")) if EMBEDDED_RECORDS.is_dir() else []:
        try:
            doc = json.loads(record.read_text())
            driver = doc["driver"]
        except (OSError, ValueError, KeyError):
            continue
        if _same_process(driver["pid"], driver["create_time"]) is not None:
            continue  # a running job's Ray
        for entry in doc.get("processes", []):
            process = _same_process(entry["pid"], entry["create_time"])
            if process is not None:
                try:
                    process.kill()
                    ended.append(process.pid)
                except psutil.Error:
                    pass  # ended meanwhile, or another user's
        record.unlink(missing_ok=True)
    return ended


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))
