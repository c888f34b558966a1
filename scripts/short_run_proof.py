"""Does a short run from the CLI learn? The table of issue 14, measured again.

    python scripts/short_run_proof.py                       # the CLI's defaults: pretrain --preset tiny --steps 400
    python scripts/short_run_proof.py --steps 400 \
        --variant "paper's recipe=--lr 1e-4 --warmup-steps 2000 --ema-decay 0.999 --batch-size 36"

1. Builds the onset corpus (pipeline/demo/sample_corpus/onset.py: the shape shown decides the pitch class, the moment
   it appears decides the onset; 36 training clips, 6 held out) and a tiny random CLIP, and extracts it, unless the
   work folder has them.
2. For each variant (default: the CLI's defaults alone), runs `pipeline run pretrain --data X --out RUN --preset tiny
   --steps N [flags]` as a user would (a new process; an existing RUN resumes, so delete it to start over).
3. For each held-out clip, `pipeline run generate --ckpt RUN/ckpt/last.pt --video CLIP --out WAV` with generate's
   defaults (the EMA weights), and again with --no-ema.
4. Measures each wave: the pitch class (the class whose fundamental's half-octave band holds the most energy while
   the shape is shown) and the energy ratio of the 0.3 s after the onset to the 0.3 s before it (0.05 s guard each
   side). Prints the table (right pitch classes, median ratio) and writes WORK/short_run_proof.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402


def cli(*args: str) -> str:
    """Run `python -m pipeline.cli ARGS` in a new process, as a user would; its output (stderr: the console)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"pipeline {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def prepare(work: Path) -> tuple[Path, Path]:
    """(the extract output, the corpus root)."""
    from pipeline.demo.sample_corpus.onset import make_onset_corpus
    from stages.visual import make_tiny_clip

    corpus, extract, clip = work / "corpus", work / "extract", work / "models" / "tiny-clip"
    if not (corpus / "manifest.parquet").exists():
        print("generating the onset corpus ...", flush=True)
        make_onset_corpus(corpus)
    if not (clip / "config.json").exists():
        make_tiny_clip(clip)
    if not (extract / "index.parquet").exists():
        print("extracting features ...", flush=True)
        cli("run", "extract", "--manifest", str(corpus / "manifest.parquet"), "--data-root", str(corpus), "--out",
            str(extract), "--visual-model", str(clip))
    return extract, corpus


def measure(wav: Path, truth: dict) -> dict:
    import soundfile as sf

    from pipeline.demo.sample_corpus.onset import onset_energy_ratio, pitch_class

    wave, sr = sf.read(wav, dtype="float32")
    heard = pitch_class(wave, sr, truth["onset_s"] + 0.05, truth["end_s"] - 0.05)
    return {"pitch_class": heard, "right": heard == truth["sound_class"],
            "ratio": onset_energy_ratio(wave, sr, truth["onset_s"])}


def evaluate(run: Path, corpus: Path, expected: dict) -> dict:
    """Per weights (ema, raw): each held-out clip's measures, the right count and the median ratio."""
    held_out = sorted(k for k, v in expected.items() if v["split"] == "test")
    result = {}
    for weights, flags in (("ema", []), ("raw", ["--no-ema"])):
        clips = {}
        for key in held_out:
            wav = run / "generated" / f"{key}_{weights}.wav"
            said = cli("run", "generate", "--ckpt", str(run / "ckpt" / "last.pt"), "--video",
                       str(corpus / "media" / "onset" / f"{key}.mp4"), "--out", str(wav), *flags)
            clips[key] = {**measure(wav, expected[key]), "weights_line": said.strip().splitlines()[-1]}
        result[weights] = {"clips": clips, "right": sum(c["right"] for c in clips.values()),
                           "of": len(clips), "median_ratio": float(np.median([c["ratio"] for c in clips.values()]))}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "short_run_proof")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--variant", action="append", default=[],
                        help='"NAME=FLAGS": pretrain flags of a variant (default: the CLI defaults alone)')
    args = parser.parse_args()

    extract, corpus = prepare(args.work)
    expected = json.loads((corpus / "expected.json").read_text())
    variants = [("CLI defaults", "")] + [tuple(v.split("=", 1)) for v in args.variant]
    results = {}
    for name, flags in variants:
        run = args.work / f"run_{args.steps}_{''.join(c if c.isalnum() else '_' for c in name)}"
        print(f"{name}: pretrain --preset tiny --steps {args.steps} {flags} -> {run}", flush=True)
        said = cli("run", "pretrain", "--data", str(extract), "--out", str(run), "--preset", "tiny", "--steps",
                   str(args.steps), *shlex.split(flags))
        summary = json.loads((run / "report.json").read_text())
        results[name] = {"flags": flags, "training": summary["training"], "ema": summary["ema"],
                         "loss": summary["loss"], "wall_s": summary["wall_s"], "summary": said[-3000:],
                         **evaluate(run, corpus, expected)}
        for weights in ("ema", "raw"):
            r = results[name][weights]
            print(f"  {weights}: pitch class right {r['right']}/{r['of']}, energy after/before the onset "
                  f"{r['median_ratio']:.1f}x (median); per clip "
                  f"{[round(c['ratio'], 1) for c in r['clips'].values()]}", flush=True)
    (args.work / "short_run_proof.json").write_text(json.dumps(results, indent=2, default=str))
    print("| run | weights | pitch class right | energy after / before the onset (median) |")
    print("|---|---|---|---|")
    for name, r in results.items():
        for weights in ("ema", "raw"):
            print(f"| {name} {r['flags']} | {weights} | {r[weights]['right']}/{r[weights]['of']} | "
                  f"{r[weights]['median_ratio']:.1f}x |")


if __name__ == "__main__":
    main()
