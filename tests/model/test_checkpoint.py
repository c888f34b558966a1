"""Checkpoints: what a run's holds for resume and generate, atomic saves, the checksum, refused files (empty,
truncated, foreign, damaged: one message each, also from the CLI), RNG states put back."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from model.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    TrainError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from model.train import run_pretrain
from stages.format.contract import read_dataset_json
from tests.model.helpers import tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_checkpoint_holds_what_resume_and_generate_need(extracted, tmp_path):
    out, _ = extracted
    run = tmp_path / "run"
    run_pretrain([out], run, tiny(steps=3, ema=True, ema_decay=0.99))
    ckpt = torch.load(run / "ckpt" / "last.pt", weights_only=True)     # plain types and tensors only
    assert ckpt["step"] == 3 and ckpt["data"]["position"] == 3
    assert ckpt["feature_hash"] == read_dataset_json(out)[0].feature_hash
    assert ckpt["contract"]["video_encoder"]["dim"] == ckpt["model_config"]["video_dim"]
    assert set(ckpt["rng"]) == {"torch", "cuda", "numpy", "python", "generator"}
    assert ckpt["ema"]["updates"] == 3 and ckpt["ema"]["decay"] == 0.99 and ckpt["optimizer"]["state"]
    assert ckpt["ema_span"]["last_decay"] == pytest.approx(3 / 12) and len(ckpt["checksum"]) == 64
    assert ckpt["config_origins"] == {"lr": "set", "warmup_steps": "set", "betas": "preset", "ema_decay": "set",
                                      "batch_size": "set"}
    assert ckpt["config"]["betas"] == [0.9, 0.95]                        # tiny's, resolved before it was recorded
    assert ckpt["config"]["audio_mean"] == ckpt["audio_norm"]["mean"] and ckpt["audio_norm"]["std"] > 0
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == ["last.pt"]     # no temporary file left
    assert json.loads((run / "workers" / "rank-0.json").read_text())["checkpoints_written"] == 1

    with pytest.raises(TrainError, match="other settings .*lr"):
        run_pretrain([out], run, tiny(steps=6, ema=True, ema_decay=0.99, lr=5e-4))


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
    with pytest.raises(CheckpointError, match="not found"):
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


# ---------------------------------------------------------------------------------------------------- refused files


@pytest.fixture(scope="module")
def good_checkpoint(extracted, tmp_path_factory):
    out, _ = extracted
    run = tmp_path_factory.mktemp("ckpt_run")
    run_pretrain([out], run, tiny(steps=2, ema=True))
    return run / "ckpt" / "last.pt"


def flip_a_weight_byte(src, dst):
    """A copy of checkpoint src with one byte flipped inside a weight's stored bytes (so torch still loads it)."""
    ckpt = load_checkpoint(src)
    weight = next(v for k, v in ckpt["model"].items() if v.numel() >= 64 and v.abs().sum() > 0)
    data = bytearray(src.read_bytes())
    at = data.find(weight.numpy().tobytes()[:64])
    assert at > 0
    data[at + 10] ^= 0x40
    dst.write_bytes(bytes(data))
    return dst


def bad_files(good, folder):
    """(name, path, what the message must say) for every kind of file that is not a usable checkpoint."""
    import pickle

    folder.mkdir(exist_ok=True)
    whole = good.read_bytes()
    (folder / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (folder / "empty.pt").write_bytes(b"")
    (folder / "text.pt").write_text("not a checkpoint at all\n" * 20)
    torch.save({"weights": torch.zeros(2)}, folder / "foreign.pt")
    (folder / "pickle.pt").write_bytes(pickle.dumps({"thing": Exception("x")}))
    flipped = flip_a_weight_byte(good, folder / "flipped.pt")
    return [("flipped", flipped, "is damaged: its content does not match the checksum"),
            ("truncated", folder / "truncated.pt", "is truncated"),
            ("empty", folder / "empty.pt", "is empty (0 bytes)"),
            ("text", folder / "text.pt", "is not a torch checkpoint"),
            ("foreign", folder / "foreign.pt", "not a VSSFlow trainer checkpoint"),
            ("pickle", folder / "pickle.pt", "holds Python objects"),
            ("missing", folder / "missing.pt", "not found")]


def test_load_refuses_damaged_and_foreign_files_with_one_message_each(good_checkpoint, tmp_path):
    assert load_checkpoint(good_checkpoint)["step"] == 2
    for _name, path, message in bad_files(good_checkpoint, tmp_path):
        with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_checkpoint(path)


def test_generate_and_finetune_refuse_bad_checkpoints_with_exit_1(good_checkpoint, extracted, tmp_path):
    """From the CLI: exit 1, one `error:` line naming the file and what is wrong; no traceback, no bare "Aborted."."""
    from typer.testing import CliRunner

    from pipeline.cli.train import train_app

    out, _ = extracted
    for name, path, message in bad_files(good_checkpoint, tmp_path / "bad"):
        commands = {"generate": ["generate", "--ckpt", str(path), "--video", str(tmp_path / "clip.mp4"), "--out",
                                 str(tmp_path / f"{name}.wav")],
                    "finetune": ["finetune", "--init", str(path), "--data", str(out), "--out",
                                 str(tmp_path / f"ft_{name}"), "--steps", "1"]}
        for command, args in commands.items():
            result = CliRunner().invoke(train_app, args, terminal_width=400)
            text = " ".join(result.output.split())
            assert result.exit_code == 1, (name, command, result.output)
            error = text[text.find("error:"):]                  # after finetune's empty progress bar, if drawn
            assert text.count("error:") == 1 and message in error and path.name in error, (name, command, text)
            assert "Traceback" not in text and "Aborted" not in text, (name, command, text)
        assert not (tmp_path / f"{name}.wav").exists() and not (tmp_path / f"ft_{name}" / "ckpt").exists()
