"""The run's config: training values per preset and where each came from, a warm-up that fits the run, the types
of the values."""

from __future__ import annotations

import pytest

from model.config import PRESETS, TRAINING_DEFAULTS
from model.train_config import TrainConfig, adopt_resolved, resolve_training, schedule_notes, training_summary


def test_unset_training_values_come_from_the_preset():
    cfg, origins = resolve_training(TrainConfig(preset="tiny", steps=400))
    assert (cfg.lr, cfg.warmup_steps, cfg.betas, cfg.ema_decay, cfg.batch_size) == (3e-3, 20, (0.9, 0.95), 0.99, 8)
    assert set(origins.values()) == {"preset"}
    base, _ = resolve_training(TrainConfig(preset="base", steps=100_000))
    assert (base.lr, base.warmup_steps, base.betas, base.ema_decay) == (1e-4, 2000, (0.9, 0.999), 0.999)
    assert set(TRAINING_DEFAULTS) == set(PRESETS)


def test_set_values_win_and_say_so():
    cfg, origins = resolve_training(TrainConfig(preset="tiny", steps=400, lr=1e-3, betas=[0.8, 0.9]))
    assert cfg.lr == 1e-3 and cfg.betas == (0.8, 0.9) and cfg.warmup_steps == 20
    assert origins["lr"] == origins["betas"] == "set" and origins["warmup_steps"] == "preset"
    assert training_summary(cfg, origins)["values"]["betas"] == [0.8, 0.9]


def test_a_presets_warm_up_is_capped_at_a_tenth_of_the_run_and_a_set_one_is_flagged():
    cfg, origins = resolve_training(TrainConfig(preset="base", steps=400))
    assert cfg.warmup_steps == 40 and "capped at 10% of the 400 steps" in origins["warmup_steps"]
    assert schedule_notes(cfg) == []
    assert "warm-up over steps 1-40, then constant to step 400" in training_summary(cfg, origins)["schedule"]
    long, origins = resolve_training(TrainConfig(preset="base", steps=400, warmup_steps=2000))
    assert long.warmup_steps == 2000 and origins["warmup_steps"] == "set"     # asked for: kept, but said loudly
    [note] = schedule_notes(long)
    assert "longer than the run (400 steps)" in note and "ends at 20% of lr" in note
    assert "cut off by the run's end" in training_summary(long, origins)["schedule"]


def test_a_resumed_run_keeps_the_values_it_started_with():
    started, _ = resolve_training(TrainConfig(preset="base", steps=400))     # warm-up capped at 40
    resumed = adopt_resolved(TrainConfig(preset="base", steps=4000), started.to_dict())
    assert resumed.warmup_steps == 40 and resumed.lr == 1e-4 and resumed.steps == 4000
    assert adopt_resolved(TrainConfig(lr=5e-4), started.to_dict()).lr == 5e-4   # a set value is compared, not replaced


@pytest.mark.parametrize("fields, message", [
    ({"lr": "fast"}, "lr must be a number, got 'fast'"),
    ({"preset": "huge"}, "unknown preset 'huge'; known: base, small, tiny"),
    ({"steps": 1.5}, "steps must be a whole number"),
    ({"batch_size": True}, "batch_size must be a whole number"),
    ({"ema": "yes"}, "ema must be true or false"),
    ({"betas": [0.9]}, "betas must be two numbers"),
    ({"lr": float("nan")}, "lr must be a number"),
    ({"val_split": 3}, "val_split must be a str"),
    ({"model_overrides": {"colour": 1}}, "unknown DiTConfig fields"),
    ({"ema_decay": 1.0}, "ema_decay must be in (0, 1)"),
])
def test_values_of_the_wrong_type_are_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**fields)


def test_numbers_written_as_strings_are_read():
    """YAML 1.1 (PyYAML) reads `lr: 1e-4` as the string "1e-4"."""
    cfg = TrainConfig(lr="1e-4", steps="1e3", betas=["0.9", 0.99], model_overrides=None)
    assert cfg.lr == 1e-4 and cfg.steps == 1000 and cfg.betas == (0.9, 0.99) and cfg.model_overrides == {}
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
