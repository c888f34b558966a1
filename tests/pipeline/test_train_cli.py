"""Training launched from the pipeline: Ray Train workers (train_launch.py), `pipeline run pretrain|finetune`."""

from __future__ import annotations

import json

import pytest

from model.checkpoint import load_checkpoint
from model.metrics import read_metrics
from tests.model.helpers import copy_output, tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_ray_train_runs_two_workers_and_rank_zero_alone_writes_the_checkpoint(extracted, ray_session, tmp_path):
    from pipeline.train_launch import run_distributed

    out, _ = extracted
    run = tmp_path / "ray_run"
    events = []
    report = run_distributed("pretrain", num_workers=2, cpus_per_worker=0.5, data_dirs=[out], out=run,
                             config=tiny(steps=3, batch_size=2, save_every=2), progress=events.append)
    workers = [json.loads((run / "workers" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [w["rank"] for w in workers] == [0, 1] and all(w["world_size"] == 2 for w in workers)
    assert all(w["steps_this_run"] == 3 for w in workers) and workers[0]["pid"] != workers[1]["pid"]
    assert workers[0]["checkpoints_written"] == 2 and workers[1]["checkpoints_written"] == 0
    ckpt = load_checkpoint(run / "ckpt" / "last.pt")
    assert ckpt["step"] == 3 and ckpt["data"]["world_size"] == 2
    assert report["world_size"] == 2 and [m["step"] for m in read_metrics(run) if "loss" in m] == [1, 2, 3]
    assert [e["step"] for e in events if e["event"] == "log"] == [1, 2, 3]      # the driver saw the progress


def test_cli_pretrain_finetune_resume_and_errors(extracted, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli.train import train_app

    out, _ = extracted
    config = tmp_path / "train.yaml"
    config.write_text("warmup_steps: 2\nlog_every: 1\nnum_workers: 0\nema: false\ndeterministic: true\n")
    args = ["pretrain", "--data", str(out), "--out", str(tmp_path / "run"), "--preset", "tiny", "--batch-size", "2",
            "--config", str(config)]
    result = CliRunner().invoke(train_app, args + ["--steps", "2"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "steps" in result.output and "checkpoint:" in result.output
    result = CliRunner().invoke(train_app, args + ["--steps", "3"], terminal_width=200)
    assert result.exit_code == 0 and "(this run 1, from 2)" in result.output

    real = copy_output(out, tmp_path / "real")
    finetune = CliRunner().invoke(train_app, ["finetune", "--init", str(tmp_path / "run" / "ckpt" / "last.pt"),
                                              "--data", str(out), "--real-joint", str(real), "--synthetic-ratio",
                                              "0.6", "--out", str(tmp_path / "ft"), "--steps", "2", "--batch-size",
                                              "2", "--video-frame-mask", "0.2", "--config", str(config)],
                                  terminal_width=200)
    assert finetune.exit_code == 0, finetune.output
    assert "synthetic 0.60" in " ".join(finetune.output.split())
    assert load_checkpoint(tmp_path / "ft" / "ckpt" / "last.pt")["config"]["video_frame_mask_p"] == 0.2

    missing = CliRunner().invoke(train_app, ["pretrain", "--data", str(tmp_path / "nope"), "--out",
                                             str(tmp_path / "r2")], terminal_width=200)
    assert missing.exit_code == 1 and "error:" in missing.output
    assert "dataset.json not found" in " ".join(missing.output.split())      # rich wraps long paths
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("learning_rate: 0.1\n")
    wrong = CliRunner().invoke(train_app, ["pretrain", "--data", str(out), "--out", str(tmp_path / "r3"),
                                           "--config", str(bad_key)], terminal_width=200)
    assert wrong.exit_code == 2 and "unknown config key" in " ".join(wrong.output.split())


@pytest.mark.parametrize("yaml_text, flags, message", [
    ('lr: "fast"\n', [], "invalid config: lr: Input should be a valid number, unable to parse string as a number "
                         "(got 'fast')"),
    ("", ["--preset", "huge"], "invalid config: unknown preset 'huge'; known: base, small, tiny"),
    ("warmup_steps: -3\n", [], "invalid config: warmup_steps must be >= 0, got -3"),
    ("ema: maybe\n", [], "invalid config: ema: Input should be a valid boolean, unable to interpret input (got 'maybe')"),
])
def test_cli_config_errors_are_one_message_and_exit_2(tmp_path, yaml_text, flags, message):
    """Refused before any data is read (the --data folder does not exist): a usage error, exit code 2."""
    from typer.testing import CliRunner

    from pipeline.cli.train import train_app

    config = tmp_path / "train.yaml"
    config.write_text(yaml_text)
    result = CliRunner().invoke(train_app, ["pretrain", "--data", str(tmp_path / "nope"), "--out",
                                            str(tmp_path / "run"), "--config", str(config), *flags],
                                terminal_width=400)
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and text.startswith("error:") and message in text, text
    assert "Traceback" not in text and not (tmp_path / "run").exists()
