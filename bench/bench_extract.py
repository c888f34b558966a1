"""Benchmark the extract job against a plain sequential loop over the same stage classes, in one run.

    python bench/bench_extract.py --encoder tiny --clips 200
    python bench/bench_extract.py --encoder clip-b16 --clips 12
    python bench/bench_extract.py --encoder tiny --clips 100 --streams all   # + lip, sync, speaker

Reports clips/s and clip-seconds/s for: the Ray Data job end to end (driver + Ray workers, Ray start-up
timed apart), the sequential loop (same stages, same shard writer), and from that loop's per-stage
clocks decode alone and the visual encoder alone on the same frames; plus peak RSS of the whole
process tree, and the Ray job driver's own peak RSS and peak Anonymous (private) memory, sampled over the job
(ru_maxrss, `process_peak_rss_mb`, includes the sequential loop run first in this process). Ratios are what
matter: this machine is shared and noisy.

`--streams` picks the time-sensitive conditions: `none` (the 10 fps CLIP stream only, as before they existed),
`default` (mouth crops with the packaged face detector, Resemblyzer's speaker reference) or `all` (a tiny
TorchScript lip encoder on the crops, a tiny synchrony encoder, the speaker reference). With streams it also
reports the mouth stream's cost per clip-second of talking video (the `lip` stage's clock) and compares the job
with the slowest encoder alone (the largest of the visual, lip_encoder, sync and speaker clocks).

The manifest cycles the sample corpus's good clips under new ids (`<id>__r<k>`), so N clips cost N real
decodes without generating N media files.
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

import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.common import PeakRss  # noqa: E402


def make_manifest(corpus_root: Path, n: int, out: Path) -> Path:
    from manifests.schema import write_manifest

    expected = json.loads((corpus_root / "expected.json").read_text())
    table = pq.read_table(corpus_root / "manifest.parquet")
    good = table.filter(pc.is_in(table["clip_id"], value_set=pa.array(
        sorted(k for k, v in expected.items() if v["outcome"] == "ok"))))
    reps = [good.set_column(0, "clip_id", pc.binary_join_element_wise(good["clip_id"], f"__r{k}", ""))
            for k in range(-(-n // good.num_rows))]
    return write_manifest(pa.concat_tables(reps).slice(0, n), out)


def make_encoder(kind: str, models: Path) -> Path:
    from stages.visual import make_tiny_clip

    if kind == "tiny":
        return make_tiny_clip(models / "tiny-clip")
    path = models / "clip-vit-b16-random"
    if not (path / "config.json").exists():
        import torch
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

        torch.manual_seed(0)
        config = CLIPVisionConfig(patch_size=16, image_size=224, hidden_size=768, intermediate_size=3072,
                                  num_hidden_layers=12, num_attention_heads=12)
        config.vssflow_random_init = True
        CLIPVisionModel(config).save_pretrained(path)
        CLIPImageProcessor().save_pretrained(path)
    return path


def stream_config(kind: str, models: Path) -> dict:
    """ExtractConfig keyword arguments for --streams none, default or all."""
    from stages.lip import LipConfig
    from stages.speaker import SpeakerConfig
    from stages.sync import SyncConfig
    from stages.tiny_encoders import make_tiny_lip_encoder, make_tiny_sync_encoder

    if kind == "none":
        return {"lip": LipConfig(enabled=False), "speaker": SpeakerConfig(enabled=False)}
    if kind == "default":
        return {}
    return {"lip": LipConfig(model_dir=str(make_tiny_lip_encoder(models / "tiny-lip"))),
            "sync": SyncConfig(model_dir=str(make_tiny_sync_encoder(models / "tiny-sync")))}


def run_sequential(manifest: Path, data_root: Path, out: Path, config) -> dict:
    """The same stages and the same unit writer (pipeline/jobs/assemble.py) in one plain loop, no Ray."""
    from manifests.validate import read_manifest
    from pipeline.jobs.assemble import UnitWork, make_unit
    from pipeline.jobs.extract import (
        JOB,
        build_contract,
        cpu_stages,
        extract_index,
        extract_sample,
        visual_stage,
        words_as_json,
    )
    from pipeline.jobs.ledger import Ledger
    from pipeline.jobs.runner import open_output

    table = words_as_json(read_manifest(manifest))
    contract = build_contract(config)
    open_output(out, JOB, contract, config)
    ledger = Ledger(out)
    plan, _ = ledger.extend_plan(table["clip_id"], config.shard_size, table["task"])
    by_id = {r["clip_id"]: r for r in table.to_pylist()}        # (arrow joins refuse the nested `words` column)
    rows = sorted(({**by_id[p["clip_id"]], **p} for p in plan.to_pylist()), key=lambda r: (r["unit"], r["position"]))
    stages = cpu_stages(config, data_root) + [visual_stage(config)]
    work = UnitWork(job=JOB, out_root=out, contract=contract, to_sample=extract_sample, to_index=extract_index,
                    stages=tuple(stages), rows_per_chunk=config.rows_per_task)
    clocks: dict[str, float] = {}
    clip_seconds = frames = talking_seconds = 0.0
    for unit in sorted({r["unit"] for r in rows}):
        result = make_unit(unit, [r for r in rows if r["unit"] == unit], work, stages)
        ledger.record_unit(unit, *result.tables(), result.summary)
        for stage, seconds in result.summary["stage_seconds"].items():
            clocks[stage] = clocks.get(stage, 0.0) + seconds
        clip_seconds += result.summary["clip_seconds"]
        frames += sum(r["n_video"] for r in result.index)
        talking_seconds += sum(r["duration_s"] for r in result.index if r["task"] in ("visual_tts", "joint"))
    return {"stage_seconds": clocks, "clip_seconds": clip_seconds, "frames": frames,
            "talking_seconds": talking_seconds}    # talking: the clips with a mouth stream


def precision_check(model: Path, corpus: Path) -> dict:
    """bf16 autocast features against fp32 on real decoded frames: cosine similarity per frame."""
    import numpy as np

    from stages.decode import DecodeStage
    from stages.visual import ClipEncoder, cpu_supports_bf16

    rows = pq.read_table(corpus / "manifest.parquet").to_pylist()
    rows = [r for r in rows if r["task"] == "v2s"][:2]
    frames = np.concatenate([r["frames"][:8] for r in DecodeStage(data_root=str(corpus))(rows)])
    fp32 = ClipEncoder(str(model), precision="fp32").encode(frames)
    bf16 = ClipEncoder(str(model), precision="bf16").encode(frames)
    cos = (fp32 * bf16).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(bf16, axis=1))
    rel = np.linalg.norm(fp32 - bf16, axis=1) / np.linalg.norm(fp32, axis=1)
    return {"cpu_native_bf16": cpu_supports_bf16(), "frames": len(frames), "cosine_min": float(cos.min()),
            "relative_l2_max": float(rel.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", choices=["tiny", "clip-b16"], default="tiny")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument("--streams", choices=["none", "default", "all"], default="none")
    parser.add_argument("--s3", action="store_true", help="write the Ray job's output to a local S3 server (moto)")
    args = parser.parse_args()
    if args.s3:
        from bench.common import LocalS3

        with LocalS3() as s3:
            run(args, s3)
    else:
        run(args, None)


def run(args, s3) -> None:
    """The sequential loop, then the Ray job (its output on the local S3 server with --s3)."""
    from pipeline.demo.sample_corpus import make_sample_corpus
    from pipeline.jobs.extract import ExtractConfig, run_extract
    from pipeline.jobs.ray_exec import init_ray
    from stages.visual import VisualConfig

    work = args.work
    corpus = work / "corpus"
    if not (corpus / "manifest.parquet").exists():
        make_sample_corpus(corpus, include_bad=False)
    manifest = make_manifest(corpus, args.clips, work / f"manifest_{args.clips}.parquet")
    model = make_encoder(args.encoder, work / "models")
    config = ExtractConfig(visual=VisualConfig(model_dir=str(model)), shard_size=64,
                           **stream_config(args.streams, work / "models"))
    result = {"encoder": args.encoder, "clips": args.clips, "streams": args.streams}
    tag = f"{args.encoder}_{args.clips}" + ("" if args.streams == "none" else f"_{args.streams}")

    if not args.skip_sequential:
        out = work / f"seq_{tag}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        with PeakRss() as rss:
            seq = run_sequential(manifest, corpus, out, config)
        wall = time.perf_counter() - start
        result["sequential"] = {"wall_s": wall, "clips_per_s": args.clips / wall,
                                "clip_seconds_per_s": seq["clip_seconds"] / wall, "peak_rss_mb": rss.peak_mb,
                                "stage_seconds": seq["stage_seconds"], "frames": seq["frames"]}
        result["decode_alone"] = {"s": seq["stage_seconds"]["decode"],
                                  "clip_seconds_per_s": seq["clip_seconds"] / seq["stage_seconds"]["decode"]}
        result["encoder_alone"] = {"s": seq["stage_seconds"]["visual"],
                                   "frames_per_s": seq["frames"] / seq["stage_seconds"]["visual"]}
        encoders = {k: v for k, v in seq["stage_seconds"].items() if k in ("visual", "lip_encoder", "sync", "speaker")}
        slowest = max(encoders, key=encoders.get)
        result["slowest_encoder_alone"] = {"stage": slowest, "s": encoders[slowest], "clocks": encoders}
        if seq["talking_seconds"] and "lip" in seq["stage_seconds"]:     # the mouth stream ran
            lip_s = seq["stage_seconds"]["lip"]
            result["mouth_stream"] = {"s": lip_s, "talking_clip_seconds": seq["talking_seconds"],
                                      "s_per_clip_second": lip_s / seq["talking_seconds"]}

    if args.encoder == "clip-b16":
        result["bf16_vs_fp32"] = precision_check(model, corpus)

    out = work / f"ray_{tag}"
    shutil.rmtree(out, ignore_errors=True)
    if s3 is not None:
        out = s3.url(f"ray_{args.encoder}_{args.clips}")
        result["out"] = out
    with PeakRss(exclude=(s3.pid,) if s3 else ()) as rss:
        start = time.perf_counter()
        init_ray(None)
        ray_start = time.perf_counter() - start
        start = time.perf_counter()
        events: list[tuple[float, int]] = []
        report = run_extract(manifest=manifest, data_root=corpus, out_dir=out, config=config,
                             progress=lambda e: events.append((time.perf_counter() - start, e["rows_done"])))
        wall = time.perf_counter() - start
    clip_seconds = report["counts"]["clip_seconds"]
    result["ray"] = {"wall_s": wall, "ray_start_s": ray_start, "clips_per_s": args.clips / wall,
                     "clip_seconds_per_s": clip_seconds / wall, "peak_rss_mb": rss.peak_mb,
                     "kept": report["counts"]["kept"], "stage_seconds": report["stage_seconds"],
                     "driver_cpu_s": report["this_run"].get("driver_cpu_s"),
                     "driver_bytes_per_row": report["this_run"].get("driver_bytes_per_row"),
                     "driver_peak_rss_mb": round(rss.driver_peak_mb, 1),    # sampled over the Ray job only
                     "driver_anonymous_peak_mb": round(rss.driver_anonymous_peak_mb, 1),   # its private memory
                     # ru_maxrss: the process's whole life, the sequential loop's peak when it ran first
                     "process_peak_rss_mb": report["this_run"].get("driver_peak_rss_mb"),
                     "first_shard_s": events[0][0] if events else None,
                     "steady_rows_per_s": ((events[-1][1] - events[0][1]) / (events[-1][0] - events[0][0])
                                           if len(events) > 2 else None)}
    if "sequential" in result:
        result["speedup_vs_sequential"] = result["sequential"]["wall_s"] / wall
        result["ray_vs_encoder_alone"] = wall / result["encoder_alone"]["s"]
        result["ray_vs_slowest_encoder_alone"] = wall / result["slowest_encoder_alone"]["s"]
    print(json.dumps(result, indent=2))
    suffix = "_s3" if s3 is not None else ""
    (work / f"result_{tag}{suffix}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
