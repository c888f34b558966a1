"""`--dry-run`: what a run would do (units, rows, estimated bytes, placement), with nothing written.

The plan is computed as the run would compute it (the output's existing plan, then new units for rows not planned
yet, one task per unit) but not stored; finished units are read from the ledger. Bytes are estimated from the
feature contract and each row's duration (its trim window, else `max_seconds`: an upper bound for clips whose
length the manifest does not state).
"""

from __future__ import annotations

import collections
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc

from manifests.tasks import VIDEO_TASKS
from pipeline.jobs.ledger import plan_rows
from stages.format.contract import FeatureContract
from stages.format.layout import OutputDir

FLAC_SHARE = 0.6        # FLAC of speech and sound at 16 kHz: about 60% of 16-bit PCM
SAMPLE_OVERHEAD = 4096  # tar headers (512 bytes a member) and K.json


def bytes_per_second(contract: FeatureContract, video: bool) -> float:
    """Stored bytes per second of clip: mel, video features, latents (float16) and FLAC audio."""
    per_s = contract.mel_fps * contract.n_mels * 2 + contract.sample_rate * 2 * FLAC_SHARE
    if video:
        per_s += contract.video_fps * contract.video_dim * 2
    if contract.latent:
        per_s += float(contract.latent["fps"]) * int(contract.latent["channels"]) * 2 * 2   # mean and log-variance
    return per_s


def estimate_bytes(rows: pa.Table, contract: FeatureContract) -> int:
    """An estimate of the shard bytes these rows make (rejects count as kept: an upper bound)."""
    n = rows.num_rows
    if n == 0:
        return 0
    seconds = [contract.max_seconds] * n
    if "start_s" in rows.column_names and "end_s" in rows.column_names:
        starts, ends = rows["start_s"].to_pylist(), rows["end_s"].to_pylist()
        seconds = [min(contract.max_seconds, max(0.0, e - (s or 0.0))) if e is not None else contract.max_seconds
                   for s, e in zip(starts, ends)]
    tasks = rows["task"].to_pylist() if "task" in rows.column_names else ["joint"] * n
    total = sum(d * bytes_per_second(contract, t in VIDEO_TASKS) for d, t in zip(seconds, tasks))
    return int(total + SAMPLE_OVERHEAD * n)


def describe_plan(out_dir, rows: pa.Table, shard_size: int, contract: FeatureContract, *,
                  tasks: Optional[pa.Array], max_units: Optional[int] = None) -> dict[str, Any]:
    """Units and rows a run would plan and do, read-only."""
    folder = OutputDir(out_dir)
    plan = folder.plan()
    added = plan_rows(plan, rows["clip_id"], shard_size, tasks)
    whole = pa.concat_tables([plan, added])
    done = folder.done_units()
    pending = whole.filter(pc.invert(pc.is_in(whole["unit"], value_set=pa.array(sorted(done), pa.int64()))))
    pending = pending.join(rows, keys="clip_id", join_type="inner").sort_by("unit")
    units = sorted(set(pending["unit"].to_pylist()))
    if max_units is not None:
        units = units[:max_units]
        pending = pending.filter(pc.is_in(pending["unit"], value_set=pa.array(units, pa.int64())))
    by_task: collections.Counter = collections.Counter()
    if "task" in pending.column_names:
        first = {}
        for unit, task in zip(pending["unit"].to_pylist(), pending["task"].to_pylist()):
            first.setdefault(unit, task)
        by_task.update(first.values())
    return {"out": str(out_dir), "rows": rows.num_rows, "rows_planned_new": added.num_rows,
            "units_planned_new": len(set(added["unit"].to_pylist())), "units_done": len(done),
            "units_todo": len(units), "rows_todo": pending.num_rows, "units_todo_by_task": dict(by_task),
            "shard_size": shard_size, "estimated_bytes": estimate_bytes(pending, contract)}
