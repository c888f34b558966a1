"""The training loop on the extracted sample corpus: the lr schedule, exact resume, fine-tuning. (That a run learns:
tests/pipeline/test_short_run_learns.py, from the CLI.)"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from model.checkpoint import load_checkpoint
from model.data import DataError, plan_finetune
from model.metrics import read_metrics
from model.train import lr_at, run_finetune, run_pretrain
from stages.format.contract import ContractError
from tests.model.helpers import copy_output, tiny

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_resumed_run_reproduces_the_uninterrupted_one(extracted, tmp_path):
    out, _ = extracted
    cfg = tiny(steps=20, ema=True, ema_decay=0.9, epoch_steps=6, video_frame_mask_p=0.2, p_drop_video=0.3,
               p_drop_streams=0.3, p_drop_speaker=0.3, stream_batch_mask_p=0.3, eval_every=5, save_every=7)
    run_pretrain([out], tmp_path / "straight", cfg)
    built = load_checkpoint(tmp_path / "straight" / "ckpt" / "last.pt")["model_config"]
    assert sorted(built["streams"]) == ["lip"] and built["ref_token"]         # resumed with the streams in use
    run_pretrain([out], tmp_path / "resumed", dataclasses.replace(cfg, steps=10))
    run_pretrain([out], tmp_path / "resumed", cfg)

    def losses(run):
        return [(m["step"], m.get("loss"), m.get("val_loss")) for m in read_metrics(run)]

    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert [s for s, *_ in straight] == [s for s, *_ in resumed]          # no step logged twice
    assert straight == resumed
    a = load_checkpoint(tmp_path / "straight" / "ckpt" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "ckpt" / "last.pt")
    assert a["step"] == b["step"] == 20
    for weights in ((a["model"], b["model"]), (a["ema"]["weights"], b["ema"]["weights"])):
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert a["ema"]["updates"] == b["ema"]["updates"] == 20
    report = json.loads((tmp_path / "resumed" / "report.json").read_text())
    assert report["start_step"] == 10 and report["steps_this_run"] == 10


def test_lr_warms_up_then_stays_constant():
    cfg = tiny(lr=1e-3, warmup_steps=4)
    assert [lr_at(s, cfg) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_finetune_starts_from_pretrained_weights_with_a_new_optimiser(extracted, tmp_path):
    out, _ = extracted
    pre = tmp_path / "pre"
    run_pretrain([out], pre, tiny(steps=6))
    real = copy_output(out, tmp_path / "real")          # stands in for a real joint corpus (a second folder)
    data = plan_finetune([out], [real], 0.75, val_samples=0)
    assert {s.name: s.weight for s in data.sources} == {"synthetic": 0.75, "real_joint": 0.25}
    assert data.sources[1].tasks == ("joint",)

    sound_only = copy_output(out, tmp_path / "sound_only", shards={"shards/extract-000000.tar"})
    with pytest.raises(DataError, match="no training samples of task 'joint'"):
        plan_finetune([out], [sound_only], 0.5)

    init = load_checkpoint(pre / "ckpt" / "last.pt")
    summary = run_finetune(pre / "ckpt" / "last.pt", [out], [real], 0.75, tmp_path / "ft",
                           tiny(preset="base", steps=2, video_frame_mask_p=0.5))
    ckpt = load_checkpoint(tmp_path / "ft" / "ckpt" / "last.pt")
    assert summary["steps"] == 2 and ckpt["step"] == 2 and ckpt["job"] == "finetune"
    assert ckpt["model_config"] == init["model_config"] and ckpt["config"]["preset"] == "tiny"
    assert ckpt["audio_norm"] == init["audio_norm"]
    assert ckpt["init_from"] == str(pre / "ckpt" / "last.pt")
    assert int(ckpt["optimizer"]["state"][0]["step"]) == 2                   # a fresh optimiser: 2 updates, not 8

    louder = copy_output(out, tmp_path / "louder", edit_contract=lambda c: dataclasses.replace(
        c, loudness={**c.loudness, "target_lufs": -16.0}))
    with pytest.raises(ContractError, match="trained on features that differ"):
        run_finetune(pre / "ckpt" / "last.pt", [louder], [], 1.0, tmp_path / "ft2", tiny(steps=1))


def test_a_resumed_run_keeps_the_preset_values_it_started_with(extracted, tmp_path):
    """The preset's warm-up was capped for a 4-step run; resuming to 30 steps keeps that schedule (recomputing the
    cap would change the learning rate of steps already run and refuse the resume as "other settings")."""
    out, _ = extracted
    run_pretrain([out], tmp_path / "run", tiny(steps=4, lr=None, warmup_steps=None))
    first = load_checkpoint(tmp_path / "run" / "ckpt" / "last.pt")
    assert (first["config"]["lr"], first["config"]["warmup_steps"]) == (3e-3, 1)
    assert first["config_origins"]["warmup_steps"].startswith("preset (20, capped at 10% of the 4 steps)")
    summary = run_pretrain([out], tmp_path / "run", tiny(steps=6, lr=None, warmup_steps=None))
    second = load_checkpoint(tmp_path / "run" / "ckpt" / "last.pt")
    assert second["step"] == 6 and second["config"]["warmup_steps"] == 1
    assert second["config_origins"] == first["config_origins"] == summary["training"]["origins"]
