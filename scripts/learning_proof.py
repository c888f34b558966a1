"""Does the trainer learn? Train a tiny VSSFlow on the sample corpus and measure what it learned.

    python scripts/learning_proof.py                      # work folder runs/learning_proof, 1500 steps
    python scripts/learning_proof.py --conditions '[]'    # ablation: a model without the lip stream and speaker
    python scripts/learning_proof.py --steps 1000 --model-overrides '{"width": 64}'
    python scripts/learning_proof.py --lr 1e-3 --raw      # another lr than the preset's; the raw weights

1. Generates the sample corpus (scale 6), a tiny random CLIP and extracts it with the default streams (mouth crops,
   speaker vectors; embedded Ray) unless the work folder has them.
2. Pretrains with the preset's training defaults (lr, warm-up, betas, EMA, batch: model/config.py
   TRAINING_DEFAULTS) unless --lr / --batch-size say otherwise (resumes if the run exists; delete it to start over).
3. Reports:
   (a) the loss curve: training loss and held-out validation loss;
   (b) on the held-out clips (split "test"), the mean L1 distance (natural-log mel) between generated and true mel,
       generating with the clip's own conditions, with another held-out clip's video in place of its own (both
       without guidance, g=1, and with it), and with no conditions at all. Learning the conditions shows as
       own < other and own < none; guidance sharpens samples, which L1 to one true take does not always reward;
   (c) for held-out speech clips, the share of the generated mel energy (sum over bands of exp(2 * log-mel)) that
       falls inside a requested speech span (first or second half of the clip), against the same share for
       unconditional samples and the span's share of the clip (the lip stream left out: the text's span alone);
   (d) lips: the generated energy inside the pause of held-out talking clips, with lips and with them masked;
   (e) speaker: the generated voice's speaker-encoder similarity to the reference's voice and to the clip's own;
   (f) solvers: Euler, Heun and dopri5, their velocity evaluations and mel L1 (scripts/proof_streams.py).
Same noise (seeds) for every variant, Euler 25 steps. The EMA weights, as `pipeline run generate` uses by default
(--raw: the raw ones).
The visual encoder is a random CLIP, so video features only carry what a random network keeps of the pictures.
Results also go to WORK/learning_proof.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proof_streams import mels_for, pause_shares, solver_table, speaker_similarity, summarise  # noqa: E402


def prepare_data(work: Path, scale: int) -> Path:
    from pipeline.demo.sample_corpus import make_sample_corpus
    from pipeline.jobs.extract import ExtractConfig, run_extract
    from pipeline.jobs.ray_exec import init_ray
    from stages.visual import VisualConfig, make_tiny_clip

    corpus, extract, clip = work / "corpus", work / "extract", work / "models" / "tiny-clip"
    if not (corpus / "manifest.parquet").exists():
        print("generating the sample corpus ...", flush=True)
        make_sample_corpus(corpus, seed=0, scale=scale, include_bad=False)
    if not (clip / "config.json").exists():
        make_tiny_clip(clip)
    if not (extract / "index.parquet").exists():
        print("extracting features ...", flush=True)
        init_ray(None)
        run_extract(manifest=corpus / "manifest.parquet", data_root=corpus, out_dir=extract,
                    config=ExtractConfig(visual=VisualConfig(model_dir=str(clip)), shard_size=8))
    return extract


def generated_mels(model, ckpt, sample: dict, prep, *, seeds, guidance: float, unconditional: bool):
    """log-mel [4T, 64] per seed for one prepared sample (its video / phones / span / streams as given)."""
    return mels_for(model, ckpt, sample, prep, seeds=seeds, guidance=guidance, unconditional=unconditional)


def true_mel(sample: dict, ckpt) -> np.ndarray:
    from model.batch import unpatch_mel

    norm = ckpt["audio_norm"]
    return unpatch_mel(torch.as_tensor(sample["audio"]) * norm["std"] + norm["mean"]).numpy()


def conditioning_distances(model, ckpt, samples, prep, seeds, guidance) -> list[dict]:
    """(b): L1(generated, true) with own conditions and with another clip's video, each without guidance (g=1,
    the learned conditional flow) and with it, and with no conditions."""
    with_video = [i for i, s in enumerate(samples) if s["video"] is not None]
    rows = []
    for i, s in enumerate(samples):
        target = true_mel(s, ckpt)
        variants = {"none": (s, True, 1.0)}
        for g in (1.0, guidance):
            variants[f"own_g{g:g}"] = (s, False, g)
            if s["video"] is not None and len(with_video) > 1:
                j = with_video[(with_video.index(i) + 1) % len(with_video)]
                variants[f"other_video_g{g:g}"] = (dict(s, video=samples[j]["video"][: len(s["video"])]), False, g)
        row = {"key": s["key"], "task": s["task"]}
        for name, (variant, uncond, g) in variants.items():
            mels = generated_mels(model, ckpt, variant, prep, seeds=seeds, guidance=g, unconditional=uncond)
            row[name] = float(np.mean([np.abs(m[: len(target)] - target).mean() for m in mels]))
        rows.append(row)
    return rows


def span_energy(model, ckpt, samples, prep, seeds, guidance) -> list[dict]:
    """(c): share of generated energy inside a requested span (first / second half of the clip). The lip stream,
    which shows where the clip's real speech is, is left out (the request is the text's span alone)."""
    rows = []
    for s in samples:
        if s["phone_ids"] is None:
            continue
        s = dict(s, streams={})
        duration = len(s["audio"]) / model.cfg.audio_fps
        for name, span in (("first half", (0.0, duration / 2)), ("second half", (duration / 2, duration))):
            variant = dict(s, speech_span_s=span)
            lo, hi = math.floor(span[0] * 100), math.ceil(span[1] * 100)          # mel frames at 100/s
            result = {"key": s["key"], "span": name, "span_share": (hi - lo) / (4 * len(s["audio"]))}
            for label, uncond in (("conditioned", False), ("unconditional", True)):
                shares = []
                for mel in generated_mels(model, ckpt, variant, prep, seeds=seeds, guidance=guidance,
                                          unconditional=uncond):
                    power = np.exp(2 * mel.astype(np.float64)).sum(axis=1)        # [frames]
                    shares.append(float(power[lo:hi].sum() / power.sum()))
                result[label] = float(np.mean(shares))
            rows.append(result)
    return rows


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for h in header:
        table.add_column(h, justify="right" if h not in ("key", "task", "span") else "left")
    for r in rows:
        table.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in r])
    console = Console()
    (console if console.is_terminal else Console(width=160)).print(table)   # whole keys in logs


def stream_measures(model, ckpt, samples, prep, extract: Path, seeds, args) -> dict:
    """(d) pause share with and without lips, (e) speaker similarity, (f) solvers (scripts/proof_streams.py)."""
    out = {}
    out["pause"] = pause_shares(model, ckpt, samples, prep, true_mel, seeds, args.guidance)
    if out["pause"]:
        rows = [[r["key"], f"{r['pause_s'][0]:.2f}-{r['pause_s'][1]:.2f}",
                 *(f"{r[k]:.2e}" if k in r else "(no lip stream)" for k in ("true", "with_lips", "lips_masked"))]
                for r in out["pause"]]
        print_table("(d) share of the speech span's generated energy inside its pause (mouth closed)",
                    ["key", "pause (s)", "true audio", "with lips", "lips masked"], rows)
    if model.cfg.ref_token:
        out["speaker"] = speaker_similarity(model, ckpt, samples, prep, extract, seeds, args.guidance)
        rows = [[r["key"], r["own"], r["other"], r["own_ref"]["to_own"], r["own_ref"]["to_other"],
                 r["other_ref"]["to_own"], r["other_ref"]["to_other"]] for r in out["speaker"]]
        print_table("(e) speaker-encoder cosine of the generated voice to each voice's mean",
                    ["key", "own voice", "other voice", "own ref: to own", "own ref: to other",
                     "other ref: to own", "other ref: to other"], rows)
    if not args.no_solvers:
        out["solvers"] = solver_table(model, ckpt, samples, prep, true_mel, seeds[:1], args.guidance)
        print_table("(f) solvers on the held-out clips (own conditions, one seed)", ["method", "steps", "NFE",
                    "mel L1"], [[r["method"], r["steps"], r["nfe"], r["mel_l1"]] for r in out["solvers"]])
    out["criteria"] = summarise(out.get("pause", []), out.get("speaker", []))
    print(json.dumps(out["criteria"], indent=2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "learning_proof")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--lr", type=float, default=None, help="default: the preset's")
    parser.add_argument("--raw", action="store_true", help="measure the raw weights instead of the EMA")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--model-overrides", type=json.loads, default={"width": 128},
                        help="DiTConfig fields over the preset (JSON); default: tiny at width 128")
    parser.add_argument("--scale", type=int, default=6, help="sample corpus scale (copies of every clip kind)")
    parser.add_argument("--conditions", type=json.loads, default=None,
                        help='extra conditions the model takes (JSON list, e.g. \'["speaker"]\' for an ablation '
                             'without lips); default: all the data carries (lip, speaker)')
    parser.add_argument("--no-solvers", action="store_true", help="skip (f), the solver comparison")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=3.0)
    args = parser.parse_args()

    from model.data import load_samples, plan_pretrain, prep_for_model
    from model.ema import describe_span
    from model.generate import load_model
    from model.metrics import read_metrics
    from model.train import run_pretrain
    from model.train_config import TrainConfig

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    extract = prepare_data(args.work, args.scale)
    tag = "".join(f"_{k}{v}" for k, v in sorted(args.model_overrides.items()))
    tag += "".join(f"_{k}{v}" for k, v in (("lr", args.lr), ("batch", args.batch_size)) if v is not None)
    tag += "" if args.conditions is None else "_" + "-".join(sorted(args.conditions) or ["none"])
    run = args.work / f"run_{args.preset}{tag}_{args.steps}"
    cfg = TrainConfig(preset=args.preset, model_overrides=args.model_overrides, batch_size=args.batch_size,
                      steps=args.steps, lr=args.lr, log_every=10, eval_every=100, save_every=100, num_workers=2,
                      val_samples=64, conditions=args.conditions, p_drop_streams=0.1, p_drop_speaker=0.1)
    print(f"training {args.preset} for {args.steps} steps -> {run}", flush=True)
    summary = run_pretrain([extract], run, cfg)
    print(f"trained with {summary['training']['values']} ({summary['training']['schedule']}); "
          f"weights measured: {'raw' if args.raw else describe_span(summary['ema'])}", flush=True)

    # (a) loss curve
    metrics = read_metrics(run)
    train = {m["step"]: m["loss"] for m in metrics if "loss" in m}
    val = {m["step"]: m["val_loss"] for m in metrics if "val_loss" in m}
    marks = sorted(set(val) | {min(train)})
    print_table("(a) loss curve", ["step", "train loss (10-step mean)", "validation loss"],
                [[s, train.get(s, float("nan")), val.get(s, float("nan"))] for s in marks])

    # held-out samples, exactly as the trainer prepared them for validation
    model, ckpt = load_model(run / "ckpt" / "last.pt", use_ema=not args.raw)
    data = plan_pretrain([extract], val_split=cfg.val_split, val_samples=cfg.val_samples)
    norm = ckpt["audio_norm"]
    prep = prep_for_model(data.contract, model.cfg, audio_repr="mel", audio_mean=norm["mean"], audio_std=norm["std"])
    samples = load_samples(data.held_out, prep)
    seeds = list(range(args.seeds))

    # (b) conditioning
    distances = conditioning_distances(model, ckpt, samples, prep, seeds, args.guidance)
    g = f"{args.guidance:g}"
    columns = ["own_g1", "other_video_g1", f"own_g{g}", f"other_video_g{g}", "none"]
    rows = [[d["key"], d["task"], *(d.get(c, float("nan")) for c in columns)] for d in distances]
    mean = {c: float(np.nanmean([d.get(c, np.nan) for d in distances])) for c in columns}
    rows.append(["mean", "", *mean.values()])
    print_table("(b) mel L1 to the true audio on held-out clips (lower is closer)",
                ["key", "task", "own, g=1", "other video, g=1", f"own, g={g}", f"other video, g={g}",
                 "no conditions"], rows)

    # (c) speech span
    spans = span_energy(model, ckpt, samples, prep, seeds, args.guidance)
    rows = [[r["key"], r["span"], r["span_share"], r["conditioned"], r["unconditional"]] for r in spans]
    if spans:
        rows.append(["mean", "", *(float(np.mean([r[k] for r in spans]))
                                   for k in ("span_share", "conditioned", "unconditional"))])
    print_table("(c) share of generated energy inside the requested speech span",
                ["key", "span", "span's share of the clip", "conditioned", "unconditional"], rows)

    streams = stream_measures(model, ckpt, samples, prep, extract, seeds, args)

    result = {"config": ckpt["config"], "weights": ckpt["weights"], "run": str(run), "train_summary": summary,
              "loss_curve": metrics, "conditioning_l1": distances, "conditioning_l1_mean": mean,
              "speech_span_energy": spans, **streams}
    (args.work / "learning_proof.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"results: {args.work / 'learning_proof.json'}")


if __name__ == "__main__":
    main()
