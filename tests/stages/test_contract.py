"""The shard contract and shard I/O, without Ray: members, dtypes, deterministic atomic tars."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from stages.format.contract import ContractError, FeatureContract, check_sample, read_dataset_json, write_dataset_json
from stages.format.shard_io import AtomicShardWriter, iter_samples, sample_members


def contract(**overrides) -> FeatureContract:
    base = dict(sample_rate=16000, video_fps=10.0, video_dim=8, video_encoder={"name": "clip", "dim": 8,
                "model_dir": "/x", "random_init": True}, mel={"n_mels": 64, "hop_length": 160},
                phones={"vocab": {"symbols": ["<pad>", "a", "b", "c"], "version": "t"}}, loudness={"target_lufs": -23.0},
                max_seconds=10.0)
    base.update(overrides)
    return FeatureContract(**base)


def good(task="visual_tts", d=2.0):
    meta = {"task": task, "duration_s": d, "has_video": task != "tts"}
    arrays = {"video": np.zeros((int(d * 10), 8), np.float16) if task != "tts" else None,
              "mel": np.zeros((int(d * 100), 64), np.float16),
              "phones": np.array([1, 2, 3], np.int16) if task != "v2s" else None, "latent": None}
    return meta, arrays


def test_good_samples_pass():
    for task in ("v2s", "visual_tts", "tts", "joint"):
        meta, arrays = good(task)
        assert check_sample(meta, arrays, contract()) == []


@pytest.mark.parametrize("breakage, expected", [
    (lambda m, a: a.update(video=a["video"].astype(np.float32)), "video: dtype"),
    (lambda m, a: a.update(video=np.zeros((20, 9), np.float16)), "video: dim 9"),
    (lambda m, a: a.update(video=np.zeros((25, 8), np.float16)), "video: 25 rows"),
    (lambda m, a: a.update(mel=np.zeros((150, 64), np.float16)), "mel: 150 frames"),
    (lambda m, a: a.update(mel=None), "mel: missing"),
    (lambda m, a: a.update(phones=None), "phones: missing"),
    (lambda m, a: a.update(phones=np.array([0, 1], np.int16)), "phones: ids"),
    (lambda m, a: a.update(phones=np.array([1, 4], np.int16)), "phones: ids"),
    (lambda m, a: a.update(latent=np.zeros((50, 256), np.float16)), "latent: present"),
    (lambda m, a: m.update(duration_s=11.0), "duration_s"),
    (lambda m, a: m.update(task="speech"), "task"),
    (lambda m, a: a.update(mel=np.full((200, 64), np.nan, np.float16)), "non-finite"),
])
def test_broken_samples_are_named(breakage, expected):
    meta, arrays = good()
    breakage(meta, arrays)
    problems = check_sample(meta, arrays, contract())
    assert any(expected in p for p in problems), problems


def test_latent_contract_checks_width_and_rate():
    c = contract(latent={"channels": 128, "fps": 25})
    meta, arrays = good()
    assert any("latent: missing" in p for p in check_sample(meta, arrays, c))
    arrays["latent"] = np.zeros((50, 256), np.float16)
    assert check_sample(meta, arrays, c) == []
    arrays["latent"] = np.zeros((49, 256), np.float16)
    assert check_sample(meta, arrays, c)


def test_feature_hash_ignores_local_paths_but_not_features():
    a = contract()
    b = contract(video_encoder={**a.video_encoder, "model_dir": "/elsewhere"})
    c = contract(video_dim=16)
    assert a.feature_hash == b.feature_hash != c.feature_hash
    assert any("video_dim" in d for d in a.differences(c))


def test_dataset_json_round_trip_and_tamper(tmp_path):
    write_dataset_json(tmp_path, contract(), job="extract", config={"x": 1})
    loaded, doc = read_dataset_json(tmp_path)
    assert loaded == contract() and doc["job"] == "extract"
    doc["contract"]["video_dim"] = 99
    (tmp_path / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(ContractError, match="feature_hash"):
        read_dataset_json(tmp_path)
    with pytest.raises(ContractError, match="not found"):
        read_dataset_json(tmp_path / "nowhere")


def test_shards_are_deterministic_atomic_and_readable_with_webdataset(tmp_path):
    meta, arrays = good()
    digests = []
    for run in range(2):
        path = tmp_path / f"run{run}" / "extract-000000.tar"
        with AtomicShardWriter(path) as writer:
            for i in range(3):
                writer.write(sample_members(f"clip_{i}", {**meta, "clip_id": f"clip_{i}"}, arrays, b"fLaC"))
        assert not list(path.parent.glob(".*.tmp"))
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    samples = list(iter_samples([tmp_path / "run0" / "extract-000000.tar"]))
    assert [s["key"] for s in samples] == ["clip_0", "clip_1", "clip_2"]
    assert samples[0]["arrays"]["video"].dtype == np.float16 and samples[0]["flac"] == b"fLaC"


def test_failed_shard_leaves_nothing(tmp_path):
    path = tmp_path / "x.tar"
    with pytest.raises(RuntimeError):
        with AtomicShardWriter(path) as writer:
            writer.write(sample_members("a", {"task": "tts"}, {}, None))
            raise RuntimeError("boom")
    assert not path.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("key", ["a.b", "../x", "", "_hidden"])
def test_hostile_keys_are_refused(key):
    with pytest.raises(ValueError):
        sample_members(key, {}, {}, None)
