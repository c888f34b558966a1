"""Checkpoints: what a run's holds for resume and generate, atomic saves, refused files, RNG states put back."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from model.checkpoint import CHECKPOINT_FORMAT, TrainError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from model.train import run_pretrain
from stages.format.contract import read_dataset_json
from tests.model.helpers import tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_checkpoint_holds_what_resume_and_generate_need(extracted, tmp_path):
    out, _ = extracted
    run = tmp_path / "run"
    run_pretrain([out], run, tiny(steps=3, ema_decay=0.99))
    ckpt = torch.load(run / "ckpt" / "last.pt", weights_only=True)     # plain types and tensors only
    assert ckpt["step"] == 3 and ckpt["data"]["position"] == 3
    assert ckpt["feature_hash"] == read_dataset_json(out)[0].feature_hash
    assert ckpt["contract"]["video_encoder"]["dim"] == ckpt["model_config"]["video_dim"]
    assert set(ckpt["rng"]) == {"torch", "cuda", "numpy", "python", "generator"}
    assert ckpt["ema"] is not None and ckpt["optimizer"]["state"]
    assert ckpt["config"]["audio_mean"] == ckpt["audio_norm"]["mean"] and ckpt["audio_norm"]["std"] > 0
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == ["last.pt"]     # no temporary file left
    assert json.loads((run / "workers" / "rank-0.json").read_text())["checkpoints_written"] == 1

    with pytest.raises(TrainError, match="other settings .*lr"):
        run_pretrain([out], run, tiny(steps=6, ema_decay=0.99, lr=5e-4))


def test_save_is_atomic_and_load_refuses_other_files(tmp_path):
    path = tmp_path / "ckpt" / "last.pt"
    save_checkpoint({"format": CHECKPOINT_FORMAT, "step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint({"format": CHECKPOINT_FORMAT, "step": 2, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["step"] == 1                                # the old checkpoint is whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]     # and no temporary file is left
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(TrainError, match="not a VSSFlow trainer checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_state_puts_every_generator_back():
    generator = torch.Generator().manual_seed(5)

    def draws():
        return (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random(),
                torch.rand(3, generator=generator).tolist())

    state = rng_state(generator)
    first = draws()
    set_rng_state(state, generator)
    assert draws() == first
