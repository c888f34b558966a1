"""Benchmark synth-mix against a plain sequential loop over the same stage, in one run.

    python bench/bench_synth_mix.py --sources bench/out/ray_tiny_600 --count 2000

Sources: an extract output (bench_extract.py leaves some under bench/out/). Reports mixtures/s and MB/s of
shards written for the Ray Data job (Ray start-up timed apart) and for a sequential loop over the same
MixStage and shard writer; peak RSS of the process tree.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import PeakRss  # noqa: E402


def run_sequential(src: Path, out: Path, config) -> dict:
    """The same MixStage and the same unit writer (pipeline/jobs/assemble.py) in one plain loop, no Ray."""
    from manifests.tasks import SOUND_SOURCE_TASKS, SPEECH_SOURCE_TASKS
    from pipeline.jobs.assemble import UnitWork, make_unit
    from pipeline.jobs.ledger import Ledger
    from pipeline.jobs.runner import open_output
    from pipeline.jobs.synth_mix import (
        JOB,
        mix_index,
        mix_sample,
        mix_stages,
        plan_recipes,
        resolve_sources,
        source_contract,
        source_pool,
    )

    sources = resolve_sources([src])
    contract = source_contract(list(sources))
    speech = source_pool(sources, SPEECH_SOURCE_TASKS, config.speech, drop_silent=False)
    sound = source_pool(sources, SOUND_SOURCE_TASKS, config.sound, drop_silent=True)
    open_output(out, JOB, contract, config)
    recipes = plan_recipes(out, speech, sound, config, contract.video_fps)
    ledger = Ledger(out)
    plan, _ = ledger.extend_plan(recipes["key"], config.shard_size)
    units = dict(zip(plan["clip_id"].to_pylist(), plan["unit"].to_pylist()))
    stages = mix_stages(contract, config)
    work = UnitWork(job=JOB, out_root=out, contract=contract, to_sample=mix_sample, to_index=mix_index,
                    stages=tuple(stages), rows_per_chunk=config.rows_per_task, drop=("audio",))
    rows = [{**r, "clip_id": r["key"], "unit": units[r["key"]]} for r in recipes.to_pylist()]
    for unit in sorted(set(units.values())):
        result = make_unit(unit, [r for r in rows if r["unit"] == unit], work, stages)
        ledger.record_unit(unit, *result.tables(), result.summary)
    return {}


def shard_mb(out: Path) -> float:
    return sum(p.stat().st_size for p in (out / "shards").glob("*.tar")) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=Path, default=REPO / "bench" / "out" / "ray_tiny_600")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()

    from pipeline.jobs.ray_exec import init_ray
    from pipeline.jobs.synth_mix import SynthMixConfig, run_synth_mix

    config = SynthMixConfig(count=args.count, shard_size=256)
    result = {"count": args.count, "sources": str(args.sources)}

    out = args.work / f"mix_seq_{args.count}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    with PeakRss() as rss:
        run_sequential(args.sources, out, config)
    wall = time.perf_counter() - start
    result["sequential"] = {"wall_s": wall, "mixtures_per_s": args.count / wall, "mb_per_s": shard_mb(out) / wall,
                            "peak_rss_mb": rss.peak_mb}

    out = args.work / f"mix_ray_{args.count}"
    shutil.rmtree(out, ignore_errors=True)
    with PeakRss() as rss:
        start = time.perf_counter()
        init_ray(None)
        ray_start = time.perf_counter() - start
        start = time.perf_counter()
        report = run_synth_mix(speech_dirs=[args.sources], sound_dirs=[args.sources], out_dir=out, config=config)
        wall = time.perf_counter() - start
    result["ray"] = {"wall_s": wall, "ray_start_s": ray_start, "mixtures_per_s": args.count / wall,
                     "mb_per_s": shard_mb(out) / wall, "peak_rss_mb": rss.peak_mb, "kept": report["counts"]["kept"],
                     "stage_seconds": report["stage_seconds"],
                     "driver_cpu_s": report["this_run"].get("driver_cpu_s"),
                     "driver_bytes_per_row": report["this_run"].get("driver_bytes_per_row"),
                     "driver_peak_rss_mb": report["this_run"].get("driver_peak_rss_mb")}
    result["speedup_vs_sequential"] = result["sequential"]["wall_s"] / wall
    print(json.dumps(result, indent=2))
    (args.work / f"result_mix_{args.count}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
