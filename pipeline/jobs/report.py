"""End of a job: consolidate the ledger into index.parquet / rejects.parquet and write report.json."""

from __future__ import annotations

import collections
import json
import platform
import resource
import sys
import time
from importlib import metadata
from typing import Any

import pyarrow as pa

from manifests import storage
from manifests.storage import Location
from pipeline.card import write_card
from pipeline.jobs.assemble import REJECT_SCHEMA
from pipeline.jobs.ledger import Ledger, write_table
from stages.format.contract import FeatureContract

PACKAGES = ("torch", "torchaudio", "ray", "webdataset", "decord", "pyloudnorm", "phonemizer", "transformers",
            "pyarrow", "numpy", "soundfile", "diffusers", "vssflow-pipeline")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def peak_rss_mb() -> float:
    """Peak resident memory of this process over its whole life (ru_maxrss is KiB on Linux, bytes on macOS): the
    job's driver under `pipeline run`, but whatever ran earlier in the same process counts too (a benchmark's
    sequential loop: bench/common.py PeakRss samples the driver over the job alone)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def finish_job(*, out_dir: Location, job: str, ledger: Ledger, contract: FeatureContract, config: dict,
               config_hash: str, started: float, stats: dict[str, Any], manifest: str) -> dict[str, Any]:
    index = ledger.unit_tables("index")
    rejects = ledger.unit_tables("rejects")
    write_table(ledger.index, index if index is not None else pa.table({"key": pa.array([], pa.string())}))
    write_table(ledger.rejects, rejects if rejects is not None else REJECT_SCHEMA.empty_table())

    summaries = ledger.unit_summaries()
    wall_s = time.time() - started
    kept = index.num_rows if index is not None else 0
    rejected = rejects.num_rows if rejects is not None else 0
    reasons = collections.Counter(f"{s}/{r}" for s, r in zip(rejects["stage"].to_pylist(), rejects["reason"].to_pylist())) \
        if rejects is not None else collections.Counter()
    by_task = collections.Counter(index["task"].to_pylist()) if index is not None else collections.Counter()
    stage_seconds: collections.Counter = collections.Counter()
    for s in summaries:
        stage_seconds.update(s.get("stage_seconds", {}))
    run_rows = stats.get("rows_processed", 0)
    run_clip_seconds = stats.get("clip_seconds_processed", 0.0)
    report = {
        "job": job,
        "out": str(out_dir),
        "manifest": manifest,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "counts": {
            "rows": stats["rows_total"],
            "kept": kept,
            "rejected": rejected,
            "unaccounted": stats["rows_total"] - kept - rejected,
            "shards": len(summaries),
            "bytes": sum(s["bytes"] for s in summaries),
            "clip_seconds": round(sum(s["clip_seconds"] for s in summaries), 3),
            "by_task": dict(sorted(by_task.items())),
            "rejects_by_reason": dict(sorted(reasons.items())),
        },
        "this_run": {
            **stats,
            "wall_s": round(wall_s, 3),
            "rows_per_s": round(run_rows / wall_s, 3) if wall_s else None,
            "clip_seconds_per_s": round(run_clip_seconds / wall_s, 3) if wall_s else None,
            "driver_peak_rss_mb": round(peak_rss_mb(), 1),
        },
        "stage_seconds": {k: round(v, 3) for k, v in sorted(stage_seconds.items())},
        "feature_hash": contract.feature_hash,
        "config_hash": config_hash,
        "config": config,
        "versions": versions(),
    }
    storage.write_bytes(ledger.report, json.dumps(report, indent=2, sort_keys=True, default=str).encode("utf-8"))
    write_card(out_dir)   # README.md (the dataset card) and wids-index.json, from the index just written
    ledger.append_run({"finished_at": report["finished_at"], "job": job, **report["this_run"],
                       "kept": kept, "rejected": rejected})
    return report
