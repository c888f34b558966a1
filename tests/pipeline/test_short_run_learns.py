"""A short run from the CLI learns (issue 14): `pipeline run pretrain --preset tiny --steps 400` with the CLI's
defaults, on a small V2S corpus in which the shape shown decides the pitch class of the sound and the moment it
appears decides the onset (pipeline/demo/sample_corpus/onset.py: 36 training clips, 6 held out, 3 s each), then
`pipeline run generate` with its defaults (the EMA weights) on the held-out clips. Pretraining runs in its own process,
as a user starts it (with one torch thread, like the suite's other tests on this shared 2-core box: contending
threads spin); generate runs through the same CLI app in this process (a new process per clip would add only
imports).

Measured on the generated wave (pipeline/demo/sample_corpus/onset.py):
- pitch class: the class whose fundamental's half-octave band holds the most energy while the shape is shown. Three
  classes an octave apart (220, 440, 880 Hz), so chance is 1 in 3; we require 5 of 6 right (by chance: 1.8%);
- onset: mean power in the 0.3 s after the onset over the 0.3 s before it (0.05 s guard each side). Held-out onsets
  lie where the training onsets' marginal is flat, so a model that ignores the picture scores about 1x; we require
  every clip above 4x (6 dB) and the median above 30x (15 dB).
The training loss must also fall below 0.6 of its first 10-step mean (measured 0.50; this replaced the older
250-step loss test of tests/model/test_train.py, which trained the same tiny model only to check that).
Measured values are in BENCHMARKS.md ("A short run from the CLI"), with the old defaults for comparison.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.checkpoint import load_checkpoint
from model.metrics import read_metrics
from pipeline.demo.sample_corpus.onset import make_onset_corpus, onset_energy_ratio, pitch_class
from tests.conftest import extract_config

REPO = Path(__file__).resolve().parents[2]
STEPS = 400


def cli_process(*args) -> str:
    """`python -m pipeline.cli ARGS` in a new process, as a user runs it; its output, whitespace folded."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                            env=env, cwd=REPO)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return " ".join(output.split())


def cli(*args) -> str:
    """`pipeline ARGS` through the CLI app in this process; its output, whitespace folded."""
    from typer.testing import CliRunner

    from pipeline.cli.app import app

    result = CliRunner().invoke(app, [str(a) for a in args], terminal_width=200)
    assert result.exit_code == 0, result.output[-3000:]
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def onset_data(tiny_clip, ray_session, tmp_path_factory) -> tuple[Path, Path]:
    """(corpus root, extract output) of the onset corpus."""
    from pipeline.jobs.extract import run_extract

    root = tmp_path_factory.mktemp("onset_corpus")
    out = tmp_path_factory.mktemp("onset_extract")
    run_extract(manifest=make_onset_corpus(root), data_root=root, out_dir=out, config=extract_config(tiny_clip))
    return root, out


def test_a_short_cli_run_with_its_defaults_learns_what_the_picture_says(onset_data, tmp_path, one_torch_thread):
    root, out = onset_data
    run = tmp_path / "run"
    said = cli_process("run", "pretrain", "--data", out, "--out", run, "--preset", "tiny", "--steps", STEPS)
    for shown in ("lr 0.003 (preset tiny)", "warm-up 20 (preset tiny)", "betas 0.9/0.95 (preset tiny)",
                  "EMA decay 0.99 (preset tiny)", "batch 8 (preset tiny)",
                  "lr 0.003: linear warm-up over steps 1-20, then constant to step 400"):
        assert shown in said, shown
    ckpt = load_checkpoint(run / "ckpt" / "last.pt")
    assert (ckpt["config"]["lr"], ckpt["config"]["warmup_steps"], ckpt["config"]["ema_decay"]) == (3e-3, 20, 0.99)
    assert ckpt["ema_span"]["updates"] == STEPS and ckpt["ema_span"]["initial_share"] < 1e-12
    losses = [m["loss"] for m in read_metrics(run) if "loss" in m]             # 10-step means
    assert len(losses) == STEPS // 10 and all(np.isfinite(losses))
    assert float(np.mean(losses[-5:])) < 0.6 * losses[0], losses                # measured 0.50
    assert json.loads((run / "report.json").read_text())["val_loss"] < 0.7 * losses[0]

    expected = json.loads((root / "expected.json").read_text())
    held_out = sorted(k for k, v in expected.items() if v["split"] == "test")
    right, ratios = [], []
    for key in held_out:
        truth, wav = expected[key], tmp_path / f"{key}.wav"
        said = cli("run", "generate", "--ckpt", run / "ckpt" / "last.pt", "--video",
                   root / "media" / "onset" / f"{key}.mp4", "--out", wav)
        assert f"weights: EMA over {STEPS} steps: 90% of its weight from the last" in said
        wave, sr = sf.read(wav, dtype="float32")
        right.append(pitch_class(wave, sr, truth["onset_s"] + 0.05, truth["end_s"] - 0.05) == truth["sound_class"])
        ratios.append(onset_energy_ratio(wave, sr, truth["onset_s"]))
    report = f"pitch right {right}, energy after/before the onset {[round(r, 1) for r in ratios]}"
    assert sum(right) >= 5, report
    assert min(ratios) > 4.0 and float(np.median(ratios)) > 30.0, report
