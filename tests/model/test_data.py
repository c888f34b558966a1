"""Training data on the extracted sample corpus: folder checks, the mix plan, held-out samples, batches, crops,
the seeded resumable stream, and loud failures on bad shards."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from model.data import (
    DataError,
    TrainLoader,
    batches_made_by,
    held_out_rows,
    open_datasets,
    plan_pretrain,
    read_index,
)
from stages.format.contract import ContractError
from stages.format.shard_io import iter_samples
from tests.model.helpers import copy_output, index_rows, prep_for, write_shard_with

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------------------------- plan


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



def test_an_index_without_its_folder_or_naming_a_shard_outside_it_is_refused(tmp_path):
    rows = [{"key": "a", "shard": "../elsewhere.tar", "task": "v2s", "split": "train"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "index.parquet")
    with pytest.raises(DataError, match="lies outside"):
        read_index([tmp_path])
    with pytest.raises(DataError, match="index.parquet not found"):
        read_index([tmp_path / "nowhere"])

# ------------------------------------------------------------------------------------------------------------- batches


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


# ------------------------------------------------------------------------------------------------------------ bad data


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
