"""The shard loader, the training loop, resume, fine-tuning, Ray Train and the CLI, on the extracted sample corpus."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from model.checkpoint import TrainError, load_checkpoint
from model.data import (
    DataError,
    SamplePrep,
    TrainLoader,
    batches_made_by,
    held_out_rows,
    open_datasets,
    plan_finetune,
    plan_pretrain,
)
from model.metrics import read_metrics
from model.train import lr_at, run_finetune, run_pretrain
from model.train_config import TrainConfig
from stages.format.contract import ContractError, read_dataset_json, write_dataset_json
from stages.format.shard_io import AtomicShardWriter, iter_samples, sample_members

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**overrides) -> TrainConfig:
    base = dict(preset="tiny", batch_size=4, steps=4, warmup_steps=5, lr=1e-3, num_workers=0, log_every=1,
                eval_every=1000, save_every=1000, deterministic=True, ema_decay=None, val_samples=4)
    return TrainConfig(**{**base, **overrides})


def copy_output(src: Path, dst: Path, *, shards=None, edit_contract=None) -> Path:
    """A copy of an extract output (only the given shards), optionally under an edited feature contract."""
    (dst / "shards").mkdir(parents=True)
    table = pq.read_table(src / "index.parquet")
    if shards is not None:
        table = table.filter(pc.is_in(table["shard"], value_set=pa.array(sorted(shards))))
    for shard in set(table["shard"].to_pylist()):
        shutil.copy(src / shard, dst / shard)
    pq.write_table(table, dst / "index.parquet")
    contract, doc = read_dataset_json(src)
    if edit_contract is not None:
        contract = edit_contract(contract)
    write_dataset_json(dst, contract, job=doc["job"], config=doc["config"])
    return dst


def index_rows(out: Path) -> list[dict]:
    return pq.read_table(out / "index.parquet").to_pylist()


def prep_for(data, **kw) -> SamplePrep:
    return SamplePrep(contract=data.contract, audio_mean=-6.0, audio_std=2.3, **kw)


# ---------------------------------------------------------------------------------------------------------------- data


def test_folders_with_different_features_are_refused(extracted, tmp_path):
    out, _ = extracted
    other = copy_output(out, tmp_path / "louder", edit_contract=lambda c: dataclasses.replace(
        c, loudness={**c.loudness, "target_lufs": -16.0}))
    with pytest.raises(ContractError) as e:
        open_datasets([out, other])
    assert str(out) in str(e.value) and str(other) in str(e.value)
    assert "loudness.target_lufs: -23.0 != -16.0" in str(e.value)
    with pytest.raises(DataError, match="given twice"):
        open_datasets([out, out])
    with pytest.raises(ContractError, match="dataset.json not found"):
        open_datasets([tmp_path])


def test_plan_mixes_tasks_by_size_or_weights_and_holds_out_the_test_split(extracted, tmp_path):
    out, _ = extracted
    rows = index_rows(out)
    test_keys = {r["key"] for r in rows if r["split"] == "test"}
    data = plan_pretrain([out], val_samples=3)
    train = [r for r in rows if r["key"] not in test_keys]
    assert {s.name: s.n_samples for s in data.sources} == {t: sum(r["task"] == t for r in train)
                                                           for t in {r["task"] for r in train}}
    for s in data.sources:
        assert s.weight == pytest.approx(s.n_samples / len(train))
    assert len(data.held_out) == 3 and {k for _, k in data.held_out} <= test_keys
    assert {k for _, k in data.exclude} == test_keys                 # the whole test split is never trained on

    weighted = plan_pretrain([out], task_weights={"v2s": 3, "tts": 1})
    assert {s.name: s.weight for s in weighted.sources} == {"v2s": 0.75, "tts": 0.25}
    with pytest.raises(DataError, match="unknown tasks"):
        plan_pretrain([out], task_weights={"speech": 1})
    one_task = copy_output(out, tmp_path / "v2s_only", shards={"shards/extract-000000.tar"})
    with pytest.raises(DataError, match="no such samples"):
        plan_pretrain([one_task], task_weights={"tts": 1})


def test_without_a_test_split_the_first_keys_of_each_task_are_held_out():
    rows = [{"url": "a.tar", "key": f"{task}_{i:02d}", "task": task, "split": "train"}
            for task, n in (("v2s", 12), ("tts", 8), ("joint", 3)) for i in range(n)]
    val, exclude = held_out_rows(rows, val_split="test", val_samples=6)
    assert [r["key"] for r in val] == ["tts_00", "tts_01", "v2s_00", "v2s_01"]     # <= a quarter of each task
    assert exclude == {("a.tar", r["key"]) for r in val}
    assert held_out_rows(rows, val_samples=0) == ([], frozenset())


def test_batches_are_padded_masked_cropped_and_exclude_held_out(extracted):
    out, _ = extracted
    data = plan_pretrain([out], val_samples=4)
    prep = prep_for(data, max_video_frames=20, max_audio_frames=50)            # 2 s windows
    batches = TrainLoader(data, prep, batch_size=6, seed=1, num_workers=0).batches()
    held = {k for _, k in data.exclude}
    seen_tasks = set()
    for _ in range(6):
        b = next(batches)
        B, T, A = b["x1"].shape
        assert A == 256 and B == 6 and T <= 50 and b["x1"].dtype == torch.float32
        assert b["video"].shape[1] <= 20 and b["video"].shape[2] == data.contract.video_dim
        assert not held & set(b["key"])
        for i, task in enumerate(b["task"]):
            seen_tasks.add(task)
            n = int(b["audio_mask"][i].sum())
            assert b["audio_mask"][i, :n].all() and not b["audio_mask"][i, n:].any()
            assert (b["x1"][i, n:] == 0).all()
            has_video, has_text = b["video_mask"][i].any(), (b["phones_track"][i] > 0).any()
            assert bool(has_video) == (task != "tts")                       # no video for TTS: masked, not faked
            assert bool(has_text) == (task != "v2s")                        # no text for V2S
            assert not (b["phones_track"][i, n:] > 0).any()
    assert seen_tasks == {"v2s", "tts", "visual_tts", "joint"}


def test_crop_keeps_the_phones_spoken_in_the_window(extracted):
    out, _ = extracted
    data = plan_pretrain([out], val_samples=0)
    speech = [r for r in index_rows(out) if r["task"] == "tts"][0]
    url = str(out / speech["shard"])
    decoded = next(d for d in iter_samples([url]) if d["key"] == speech["key"])
    full = prep_for(data)(decoded, np.random.default_rng(0))
    from model.batch import span_frames, stretch_phones

    n = len(full["audio"])
    track = stretch_phones(full["phone_ids"], n, *span_frames(full["speech_span_s"], 25.0))
    for seed in range(3):
        crop = prep_for(data, max_video_frames=10, max_audio_frames=25)(decoded, np.random.default_rng(seed))
        start = next(a for a in range(0, n - 24, 5) if np.array_equal(crop["audio"], full["audio"][a:a + 25]))
        assert torch.equal(crop["phones_track"], track[start:start + 25])


def test_stream_is_seeded_resumable_and_works_with_fewer_shards_than_workers(extracted, tmp_path):
    out, _ = extracted
    one_shard = copy_output(out, tmp_path / "one", shards={"shards/extract-000004.tar"})   # tts + visual_tts
    data = plan_pretrain([one_shard], val_samples=0)
    loader = TrainLoader(data, prep_for(data), batch_size=2, seed=3, num_workers=2, epoch_steps=4)
    stream, restarted = loader.batches(0), loader.batches(3)
    first = [next(stream) for _ in range(7)]
    resumed = [next(restarted) for _ in range(4)]                              # crosses the epoch boundary at 4
    for a, b in zip(first[3:], resumed, strict=True):
        assert a["key"] == b["key"] and torch.equal(a["x1"], b["x1"]) and torch.equal(a["phones_track"],
                                                                                      b["phones_track"])
    other_seed = TrainLoader(data, prep_for(data), batch_size=2, seed=4, num_workers=2, epoch_steps=4).batches(0)
    assert [next(other_seed)["key"] for _ in range(7)] != [b["key"] for b in first]
    assert [batches_made_by(w, 2, 5) for w in (0, 1)] == [3, 2]


def write_shard_with(out: Path, dst: Path, change) -> Path:
    """A one-shard output whose second sample is changed by `change(arrays)`; its index lists both samples."""
    src = out / "shards" / "extract-000000.tar"
    samples = list(iter_samples([src]))[:2]
    (dst / "shards").mkdir(parents=True)
    with AtomicShardWriter(dst / "shards" / "bad-000000.tar") as writer:
        for i, s in enumerate(samples):
            arrays = dict(s["arrays"])
            if i == 1:
                change(arrays)
            writer.write(sample_members(s["key"], s["meta"], arrays, s["flac"]))
    rows = [{"key": s["key"], "shard": "shards/bad-000000.tar", "task": s["meta"]["task"], "split": "train"}
            for s in samples]
    pq.write_table(pa.Table.from_pylist(rows), dst / "index.parquet")
    contract, doc = read_dataset_json(out)
    write_dataset_json(dst, contract, job=doc["job"], config=doc["config"])
    return dst


def test_a_sample_that_breaks_the_contract_fails_loudly(extracted, tmp_path):
    out, _ = extracted

    def nan_mel(arrays):
        arrays["mel"] = arrays["mel"].copy()
        arrays["mel"][3, 5] = np.nan

    bad = write_shard_with(out, tmp_path / "bad", nan_mel)
    data = plan_pretrain([bad], val_samples=0)
    with pytest.raises(ContractError, match="mel: non-finite values"):
        next(TrainLoader(data, prep_for(data), batch_size=2, seed=0, num_workers=0).batches())


def test_a_shard_that_disagrees_with_its_index_fails_loudly(extracted, tmp_path):
    out, _ = extracted
    folder = write_shard_with(out, tmp_path / "short", lambda arrays: None)
    rows = index_rows(folder)
    pq.write_table(pa.Table.from_pylist(rows + [dict(rows[0], key="missing_key")]), folder / "index.parquet")
    data = plan_pretrain([folder], val_samples=0)
    with pytest.raises(DataError, match="holds 2 samples .* says 3"):
        next(TrainLoader(data, prep_for(data), batch_size=8, seed=0, num_workers=0).batches())


# ---------------------------------------------------------------------------------------------------------------- loop


def test_loss_falls_well_below_its_start(extracted, tmp_path):
    """Tiny preset (width 128: at 64 the loss settles near 0.55 of its start in this budget, too close to the line)."""
    out, _ = extracted
    cfg = tiny(steps=250, batch_size=8, lr=3e-3, warmup_steps=20, betas=(0.9, 0.95), log_every=10,
               eval_every=250, save_every=250, model_overrides={"width": 128})
    summary = run_pretrain([out], tmp_path / "run", cfg)
    losses = [m["loss"] for m in read_metrics(tmp_path / "run") if "loss" in m]
    assert len(losses) == 25 and all(np.isfinite(losses))
    first, last = losses[0], float(np.mean(losses[-5:]))
    assert last < 0.6 * first, (first, last)
    assert summary["val_loss"] < 0.7 * first


def test_resumed_run_reproduces_the_uninterrupted_one(extracted, tmp_path):
    out, _ = extracted
    cfg = tiny(steps=20, ema_decay=0.9, epoch_steps=6, video_frame_mask_p=0.2, p_drop_video=0.3, eval_every=5,
               save_every=7)
    run_pretrain([out], tmp_path / "straight", cfg)
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
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    report = json.loads((tmp_path / "resumed" / "report.json").read_text())
    assert report["start_step"] == 10 and report["steps_this_run"] == 10


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


def test_ray_train_runs_two_workers_and_rank_zero_alone_writes_the_checkpoint(extracted, ray_session, tmp_path):
    from pipeline.cli.train import run_distributed

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


# ----------------------------------------------------------------------------------------------------------------- CLI


def test_cli_pretrain_finetune_resume_and_errors(extracted, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli.train import train_app

    out, _ = extracted
    config = tmp_path / "train.yaml"
    config.write_text("warmup_steps: 2\nlog_every: 1\nnum_workers: 0\nema_decay: null\ndeterministic: true\n")
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
    assert wrong.exit_code == 1 and "unknown config key" in " ".join(wrong.output.split())
