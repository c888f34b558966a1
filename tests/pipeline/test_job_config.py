"""Job configs as a person meets them: the shipped examples load, `--set` overrides one key, `--print-config` prints
what a run would use (and that YAML is itself a valid config), and every mistake is a usage error naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli.app import app

runner = CliRunner()
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def job_classes():
    from model.train_config import TrainConfig
    from pipeline.jobs.extract import ExtractConfig
    from pipeline.jobs.synth_mix import SynthMixConfig

    return {"extract": ExtractConfig, "synth-mix": SynthMixConfig, "pretrain": TrainConfig, "finetune": TrainConfig}


def job_args(job: str, tmp_path: Path) -> list[str]:
    """The required options of each job; --print-config ends the command before any of them is used."""
    return {"extract": ["--manifest", "m.parquet", "--data-root", ".", "--out", str(tmp_path / "o")],
            "synth-mix": ["--speech", "a", "--sound", "b", "--out", str(tmp_path / "o")],
            "pretrain": ["--data", "a", "--out", str(tmp_path / "o")],
            "finetune": ["--init", "x.pt", "--data", "a", "--out", str(tmp_path / "o")]}[job]


def test_every_job_with_a_config_ships_an_example_that_loads():
    from pipeline.config import load_config

    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(job_classes())
    for job, cls in job_classes().items():
        config = load_config(cls, CONFIGS / f"{job}.yaml")
        written = yaml.safe_load((CONFIGS / f"{job}.yaml").read_text())
        for key, value in written.items():   # what the example says is what the job gets
            got = getattr(config, key)
            assert (got if not hasattr(got, "__dataclass_fields__") else key) is not None, (job, key)
            if not isinstance(value, dict):
                assert got == (tuple(value) if isinstance(got, tuple) else value), (job, key)


@pytest.mark.parametrize("job", ["extract", "synth-mix", "pretrain", "finetune"])
def test_print_config_shows_the_file_and_the_sets_and_prints_a_valid_config(job, tmp_path):
    sets = {"extract": ["--set", "shard_size=7", "--set", "phonemes.phone_set=arpabet"],
            "synth-mix": ["--set", "speech.splits=[train, valid]", "--set", "mix.snr_db_max=9"],
            "pretrain": ["--set", "lr=0.003", "--set", "task_weights={v2s: 2}"],
            "finetune": ["--set", "video_frame_mask_p=0.25", "--set", "ema_decay=null"]}[job]
    result = runner.invoke(app, ["run", job, *job_args(job, tmp_path), "--config", str(CONFIGS / f"{job}.yaml"),
                                 *sets, "--print-config"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    expected = {"extract": (("shard_size",), 7), "synth-mix": (("speech", "splits"), ["train", "valid"]),
                "pretrain": (("task_weights",), {"v2s": 2}), "finetune": (("ema_decay",), None)}[job]
    value = printed
    for part in expected[0]:
        value = value[part]
    assert value == expected[1]
    from_file = {"extract": ("visual", "model_dir"), "synth-mix": ("count",), "pretrain": ("warmup_steps",),
                 "finetune": ("steps",)}[job]
    value = printed
    for part in from_file:
        value = value[part]
    assert value == {"extract": "models/clip-vit-base-patch16", "synth-mix": 100000, "pretrain": 2000,
                     "finetune": 20000}[job]
    assert not (tmp_path / "o").exists()   # nothing ran
    (tmp_path / "printed.yaml").write_text(result.stdout)
    again = runner.invoke(app, ["run", job, *job_args(job, tmp_path), "--config", str(tmp_path / "printed.yaml"),
                                "--print-config"])
    assert again.exit_code == 0 and again.stdout == result.stdout


@pytest.mark.parametrize("sets, said", [
    (["shard_size=x"], "shard_size: Input should be a valid integer"),
    (["visual.batchframes=3"], "unknown config key(s) ['batchframes'] in visual"),
    (["shard_size"], "give KEY=VALUE"),
    (["decode.max_seconds=[1"], "the value is not a YAML value"),
    (["shard_size=8"], "shard_size is given twice: by its own option and by --set"),
    (["vad.threshold=1", "vad.threshold=2"], "--set vad.threshold is given twice"),
    (["visual.placement=gpu"], "visual"),
])
def test_a_bad_set_is_a_usage_error_naming_the_key(sets, said, tmp_path):
    args = ["run", "extract", *job_args("extract", tmp_path), "--print-config"]
    if "by its own option" in said:
        args += ["--shard-size", "4"]
    for pair in sets:
        args += ["--set", pair]
    result = runner.invoke(app, args)
    flat = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert said in flat, flat
    if sets == ["shard_size=x"]:
        assert "(got 'x')" in flat


def test_a_config_file_with_a_wrong_type_names_key_value_and_type(tmp_path):
    (tmp_path / "c.yaml").write_text('shard_size: "x"\nsound:\n  min_seconds: [1]\n')
    result = runner.invoke(app, ["run", "synth-mix", *job_args("synth-mix", tmp_path), "--config",
                                 str(tmp_path / "c.yaml")])
    flat = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "shard_size: Input should be a valid integer" in flat and "(got 'x')" in flat
    assert "sound.min_seconds: Input should be a valid number" in flat and "(got [1])" in flat
