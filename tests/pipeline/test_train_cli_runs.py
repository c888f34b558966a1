"""Training jobs run as users run them, from the CLI: pretrain killed with SIGKILL between checkpoints and resumed,
finetune on real synth-mix output and its resume. Each resumed run must equal the uninterrupted one exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from typer.testing import CliRunner

from model.checkpoint import load_checkpoint
from model.metrics import read_metrics
from pipeline.cli.train import train_app

# deterministic on CPU; small steps so a run takes seconds; checkpoints every 4 steps
TRAIN_YAML = "warmup_steps: 2\nlog_every: 1\nnum_workers: 0\nema_decay: 0.9\ndeterministic: true\nsave_every: 4\n" \
             "eval_every: 1000\nval_samples: 0\nnum_threads: 1\n"


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "train.yaml"
    config.write_text(TRAIN_YAML)
    return config


def logged(run: Path) -> list[tuple]:
    return [(m["step"], m.get("loss")) for m in read_metrics(run) if "loss" in m]


def assert_same_weights(a: Path, b: Path) -> None:
    x, y = load_checkpoint(a / "ckpt" / "last.pt"), load_checkpoint(b / "ckpt" / "last.pt")
    assert x["step"] == y["step"]
    for name, a, b in (("model", x["model"], y["model"]), ("ema", x["ema"]["weights"], y["ema"]["weights"])):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert x["ema"]["updates"] == y["ema"]["updates"] == x["step"]


def test_pretrain_killed_between_checkpoints_resumes_to_the_uninterrupted_run(extracted, tmp_path):
    out, _ = extracted
    args = ["run", "pretrain", "--data", str(out), "--preset", "tiny", "--batch-size", "2", "--steps", "14",
            "--config", str(write_config(tmp_path))]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "pipeline.cli"]
    straight = subprocess.run(cmd + args + ["--out", str(tmp_path / "straight")], env=env, capture_output=True,
                              text=True)
    assert straight.returncode == 0, straight.stdout + straight.stderr

    run = tmp_path / "killed"
    with open(tmp_path / "killed.log", "w") as log:   # kept: a crash of the first run shows here, not as "0 steps"
        proc = subprocess.Popen(cmd + args + ["--out", str(run)], env=env, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:                    # kill once step 6 is logged: checkpoint 4 is behind it
            if (run / "metrics.jsonl").is_file() and any(s >= 6 for s, _ in logged(run)):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()
    at_kill = load_checkpoint(run / "ckpt" / "last.pt")["step"]
    assert at_kill < max(s for s, _ in logged(run))  # steps past the last checkpoint were logged and lost

    resumed = subprocess.run(cmd + args + ["--out", str(run)], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    said = " ".join((resumed.stdout + resumed.stderr).split())
    assert f"from {at_kill})" in said, said
    assert logged(run) == logged(tmp_path / "straight")       # every step once, with the same loss
    assert_same_weights(run, tmp_path / "straight")


def test_finetune_on_mixtures_from_the_cli_and_its_resume(extracted, mixed, tmp_path):
    out, _ = extracted
    config = write_config(tmp_path)
    invoke = lambda *a: CliRunner().invoke(train_app, [str(x) for x in a], terminal_width=200)  # noqa: E731
    pre = invoke("pretrain", "--data", out, "--out", tmp_path / "pre", "--preset", "tiny", "--batch-size", 2,
                 "--steps", 4, "--config", config)
    assert pre.exit_code == 0, pre.output
    init = tmp_path / "pre" / "ckpt" / "last.pt"

    def finetune(run: str, steps: int):
        result = invoke("finetune", "--init", init, "--data", mixed[0], "--real-joint", out, "--synthetic-ratio",
                        0.75, "--out", tmp_path / run, "--steps", steps, "--batch-size", 2, "--config", config)
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    said = finetune("straight", 8)
    assert "synthetic 0.75" in said
    summary = json.loads((tmp_path / "straight" / "report.json").read_text())
    assert summary["steps_this_run"] == 8
    finetune("resumed", 4)
    assert "(this run 4, from 4)" in finetune("resumed", 8)
    assert logged(tmp_path / "resumed") == logged(tmp_path / "straight")
    assert_same_weights(tmp_path / "resumed", tmp_path / "straight")
