"""Benchmark the training data path and loop on CPU; prints JSON (also written to WORK/result_train.json).

    python bench/bench_train.py                          # extracts 200 clips under bench/out first if needed
    python bench/bench_train.py --data bench/out/ray_tiny_600 --steps-tiny 60 --steps-small 12

Measures:
  loader        samples/s of model.data.TrainLoader (decode, contract check, collate) with 0 and 2 DataLoader
                workers, after the first batch (start-up reported apart)
  trainer       steps/s and samples/s of model.train for the tiny and small presets (2 loader workers), taken
                over the second half of the run (the first half includes worker start-up and warm-up), the share
                of that time spent waiting for data, and the peak RSS of the process tree
  parameters    parameter counts of every preset (mel audio 256-d, CLIP ViT-B/16 video 768-d)
This machine is shared and noisy: compare ratios, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def ensure_data(work: Path, clips: int) -> Path:
    """An extract output of `clips` sample-corpus clips (the extract job on an embedded Ray), made once."""
    from bench_extract import make_encoder, make_manifest

    from pipeline.demo.sample_corpus import make_sample_corpus
    from pipeline.jobs.extract import ExtractConfig, run_extract
    from pipeline.jobs.ray_exec import init_ray
    from stages.visual import VisualConfig

    out = work / f"train_data_{clips}"
    if (out / "index.parquet").exists():
        return out
    corpus = work / "corpus"
    if not (corpus / "manifest.parquet").exists():
        make_sample_corpus(corpus, include_bad=False)
    manifest = make_manifest(corpus, clips, work / f"manifest_{clips}.parquet")
    config = ExtractConfig(visual=VisualConfig(model_dir=str(make_encoder("tiny", work / "models"))), shard_size=64)
    shutil.rmtree(out, ignore_errors=True)
    print(f"extracting {clips} clips into {out} ...", file=sys.stderr, flush=True)
    init_ray(None)
    run_extract(manifest=manifest, data_root=corpus, out_dir=out, config=config)
    import ray

    ray.shutdown()   # the benchmark itself runs without Ray
    return out


def bench_loader(data_dir: Path, workers: int, batch_size: int, batches: int) -> dict:
    from model.data import SamplePrep, TrainLoader, estimate_audio_norm, plan_pretrain

    data = plan_pretrain([data_dir], val_samples=0)
    mean, std = estimate_audio_norm(data, "mel", 64)
    prep = SamplePrep(contract=data.contract, audio_mean=mean, audio_std=std)
    stream = TrainLoader(data, prep, batch_size=batch_size, seed=0, num_workers=workers, epoch_steps=10**6).batches()
    start = time.perf_counter()
    next(stream)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    wall = time.perf_counter() - start
    stream.close()
    return {"num_workers": workers, "batch_size": batch_size, "batches": batches, "first_batch_s": first,
            "samples_per_s": batches * batch_size / wall, "batches_per_s": batches / wall}


def bench_trainer(data_dir: Path, work: Path, preset: str, steps: int, batch_size: int) -> dict:
    from bench_extract import PeakRss

    from model.metrics import read_metrics
    from model.train import run_pretrain
    from model.train_config import TrainConfig

    run = work / f"bench_run_{preset}"
    shutil.rmtree(run, ignore_errors=True)
    half = max(1, steps // 2)
    cfg = TrainConfig(preset=preset, batch_size=batch_size, steps=2 * half, warmup_steps=10, num_workers=2,
                      log_every=half, eval_every=10**9, save_every=10**9, val_samples=0, ema_decay=0.999)
    with PeakRss() as rss:
        summary = run_pretrain([data_dir], run, cfg)
    second = [m for m in read_metrics(run) if "loss" in m][-1]          # the second half: steady state
    shutil.rmtree(run, ignore_errors=True)
    return {"preset": preset, "parameters": summary["parameters"], "batch_size": batch_size, "steps": 2 * half,
            "steps_per_s": second["steps_per_s"], "samples_per_s": second["samples_per_s"],
            "data_wait_frac": second["data_wait_frac"], "overall_steps_per_s": summary["steps_per_s"],
            "peak_rss_mb": rss.peak_mb}


def parameter_counts() -> dict:
    from model.config import PRESETS, preset
    from model.dit import VSSFlowDiT, count_parameters

    counts = {}
    for name in PRESETS:
        with torch.device("meta"):
            counts[name] = count_parameters(VSSFlowDiT(preset(name)))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="an extract output folder; default: build one under --work")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--loader-batches", type=int, default=40)
    parser.add_argument("--steps-tiny", type=int, default=40)
    parser.add_argument("--steps-small", type=int, default=10)
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    data_dir = args.data or ensure_data(args.work, args.clips)
    result = {"data": str(data_dir), "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
              "loader": [bench_loader(data_dir, w, args.batch_size, args.loader_batches) for w in (0, 2)],
              "trainer": [bench_trainer(data_dir, args.work, "tiny", args.steps_tiny, args.batch_size),
                          bench_trainer(data_dir, args.work, "small", args.steps_small, args.batch_size)],
              "parameters": parameter_counts()}
    text = json.dumps(result, indent=2)
    print(text)
    (args.work / "result_train.json").write_text(text)


if __name__ == "__main__":
    main()
