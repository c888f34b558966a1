"""Running `stages/` objects under Ray: connecting to Ray, numpy batches <-> rows, stages as tasks or as actors.

Stages see plain row dicts; this adapter is the only code that knows Ray Data's batch format.
Arrays cross operator boundaries as `.npy` bytes (a binary column): Ray's tensor columns cannot unify
blocks whose arrays differ in shape or nullness (e.g. phone ids of one length in one block, several
in another), and bytes cost one copy, nothing next to decoding or encoding a clip.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Iterable, Optional, Sequence

import numpy as np

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

def init_ray(address: Optional[str] = None, *, num_cpus: Optional[int] = None, quiet: bool = True) -> str:
    """Start or join Ray once per process; returns a short description of where we run."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return "ray (already initialised)"
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=not quiet)
        where = f"ray cluster at {address}"
    else:
        # An embedded instance stays on loopback (Ray otherwise picks the machine's other address).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level=logging.WARNING, log_to_driver=not quiet, configure_logging=True)
        where = f"embedded ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False       # the driver shows one progress bar of its own
    context.print_on_execution_start = False
    context.verbose_progress = False
    return where


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))
