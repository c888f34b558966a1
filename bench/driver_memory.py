"""Trace the extract job's driver memory: what it holds, apart from what it maps.

    python bench/driver_memory.py --clips 200
    python bench/driver_memory.py --clips 2000 --tracemalloc

Runs only the Ray job (no sequential loop in this process, so the figures are the driver's alone) on the same
manifest, model and config as bench/bench_extract.py, and samples this process's /proc/self/smaps every
`--every` seconds: Rss, Pss, Anonymous (private heap and native allocations), and the resident pages of
Ray's object store that the driver maps (/dev/shm plasma pages: counted in Rss, shared, not the driver's own).
With --tracemalloc it also compares Python heap snapshots taken after Ray started and after the last unit was
recorded (before the report consolidates the ledger), by traceback, and reports the top differences.
Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_extract import make_encoder, make_manifest, stream_config  # noqa: E402

FIELDS = ("Rss", "Pss", "Anonymous", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty")


def smaps() -> dict[str, float]:
    """This process's memory in MB: the smaps_rollup fields and `object_store`, the Rss of mapped /dev/shm pages."""
    totals = dict.fromkeys(FIELDS, 0.0)
    totals["object_store"] = 0.0
    shm = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if not head.endswith(":"):           # a mapping's header line: address range, perms, ..., path
                shm = "/dev/shm" in line or "plasma" in line
                continue
            key = head[:-1]
            if key in totals:
                kb = float(line.split()[1])
                totals[key] += kb / 1024
                if key == "Rss" and shm:
                    totals["object_store"] += kb / 1024
    return totals


class Sampler:
    """Peaks of each smaps figure over the run, and the figures at the moment of peak Rss."""

    def __init__(self, every_s: float):
        self.every_s, self.peaks, self.at_peak_rss = every_s, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            now = smaps()
            if now["Rss"] >= self.peaks.get("Rss", 0.0):
                self.at_peak_rss = now
            self.peaks = {k: max(v, self.peaks.get(k, 0.0)) for k, v in now.items()}
            time.sleep(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()


def rounded(d: dict) -> dict:
    return {k: round(v, 1) for k, v in d.items()}


def top_differences(before, after, limit: int) -> list[dict]:
    stats = after.compare_to(before, "traceback")
    return [{"size_diff_kb": round(s.size_diff / 1024, 1), "count_diff": s.count_diff,
             "where": [f"{fr.filename}:{fr.lineno}" for fr in s.traceback][-6:]} for s in stats[:limit]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args()

    from pipeline.demo.sample_corpus import make_sample_corpus
    from pipeline.jobs.extract import ExtractConfig, run_extract
    from pipeline.jobs.ray_exec import init_ray
    from stages.visual import VisualConfig

    corpus = args.work / "corpus"
    if not (corpus / "manifest.parquet").exists():
        make_sample_corpus(corpus, include_bad=False)
    manifest = make_manifest(corpus, args.clips, args.work / f"manifest_{args.clips}.parquet")
    model = make_encoder("tiny", args.work / "models")
    config = ExtractConfig(visual=VisualConfig(model_dir=str(model)), shard_size=64,
                           **stream_config("none", args.work / "models"))
    out = args.work / f"mem_tiny_{args.clips}"
    shutil.rmtree(out, ignore_errors=True)

    result: dict = {"clips": args.clips, "before_ray": rounded(smaps())}
    init_ray(None)
    result["after_ray_start"] = rounded(smaps())
    snapshots = {}
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(12)
        snapshots["start"] = tracemalloc.take_snapshot()

    def progress(event: dict) -> None:
        if args.tracemalloc and event["rows_done"] == event["rows_todo"]:
            snapshots["last_unit"] = tracemalloc.take_snapshot()   # before finish_job reads the ledger back

    with Sampler(args.every) as sampler:
        start = time.perf_counter()
        report = run_extract(manifest=manifest, data_root=corpus, out_dir=out, config=config, progress=progress)
        wall = time.perf_counter() - start
    result.update(wall_s=round(wall, 1), kept=report["counts"]["kept"], peaks=rounded(sampler.peaks),
                  at_peak_rss=rounded(sampler.at_peak_rss), end=rounded(smaps()),
                  report_driver_peak_rss_mb=report["this_run"]["driver_peak_rss_mb"])
    if args.tracemalloc:
        current, peak = tracemalloc.get_traced_memory()
        result["python_heap_mb"] = {"current": round(current / 2**20, 1), "peak": round(peak / 2**20, 1)}
        result["top_differences"] = top_differences(snapshots["start"], snapshots["last_unit"], 12)
    print(json.dumps(result, indent=2))
    (args.work / f"driver_memory_{args.clips}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
