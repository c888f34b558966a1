"""Temporal streams in the feature contract: old outputs stay readable, samples are checked, folders never mix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from stages.format.contract import (
    ContractError,
    FeatureContract,
    check_sample,
    read_dataset_json,
    require_same,
    stream_members,
    stream_record,
    write_dataset_json,
)
from stages.format.shard_io import decode_sample, sample_members
from tests.stages.test_contract import contract, good

OLD_DATASET = Path(__file__).parent / "data" / "dataset_before_streams.json"
LIP = stream_record(fps=25.0, region="mouth", encoder={"name": "crops", "model_dir": "/here"}, dtype="uint8",
                    frame_shape=[88, 88], tasks=["joint", "visual_tts"], valid=True)
SPEAKER = {"dim": 4, "dtype": "float32", "tasks": ["joint", "tts", "visual_tts"], "span": "speech",
           "encoder": {"name": "tiny", "model_dir": "/here"}}


def with_streams(**overrides) -> FeatureContract:
    streams, speaker = overrides.pop("streams", {"lip": LIP}), overrides.pop("speaker", SPEAKER)
    return contract(streams=streams, speaker=speaker, members=stream_members(streams, speaker), **overrides)


def good_with_streams(task="visual_tts", d=2.0):
    meta, arrays = good(task, d)
    if task in ("visual_tts", "joint"):
        arrays.update(lip=np.zeros((int(d * 25), 88, 88), np.uint8), lip_valid=np.ones(int(d * 25), np.uint8))
    if task != "v2s":
        arrays["speaker"] = np.full(4, 0.5, np.float32)
    return meta, arrays


def test_a_dataset_json_written_before_streams_reads_and_hashes_as_before(tmp_path):
    shutil.copy(OLD_DATASET, tmp_path / "dataset.json")
    old, doc = read_dataset_json(tmp_path)          # its stored feature_hash must still match
    assert old.streams is None and old.speaker is None
    assert list(old.all_streams()) == ["video"]
    assert old.to_dict() == doc["contract"]         # nothing added on the way through
    for task in ("v2s", "visual_tts", "tts"):       # its samples pass as they did
        assert check_sample(*good(task), dataset_contract(old)) == []
    write_dataset_json(tmp_path, old, job="extract", config={})
    assert read_dataset_json(tmp_path)[0].feature_hash == doc["feature_hash"]


def dataset_contract(c: FeatureContract) -> FeatureContract:
    """The old contract with the test's tiny video dim, so the shared sample builder fits it."""
    from dataclasses import replace

    return replace(c, video_dim=8)


def test_dataset_json_describes_every_stream(tmp_path):
    c = with_streams()
    write_dataset_json(tmp_path, c, job="extract", config={})
    doc = json.loads((tmp_path / "dataset.json").read_text())
    streams = doc["conditions"]["streams"]
    assert sorted(streams) == ["lip", "video"]
    assert streams["video"]["fps"] == 10.0 and streams["video"]["frame_shape"] == [8]
    assert streams["lip"] == {**LIP, "encoder": {"name": "crops", "model_dir": "/here"}}
    assert doc["conditions"]["speaker"]["dim"] == 4
    assert {"lip.npy", "lip_valid.npy", "speaker.npy"} <= set(doc["contract"]["members"])
    assert read_dataset_json(tmp_path)[0] == c
    # a moved model directory is still the same features
    moved = with_streams(streams={"lip": {**LIP, "encoder": {"name": "crops", "model_dir": "/elsewhere"}}})
    assert moved.feature_hash == c.feature_hash


def test_samples_with_streams_pass_and_round_trip_through_a_tar():
    c = with_streams()
    for task in ("v2s", "visual_tts", "tts", "joint"):
        meta, arrays = good_with_streams(task)
        assert check_sample(meta, arrays, c) == [], task
    meta, arrays = good_with_streams("visual_tts")
    members = sample_members("k1", meta, arrays, None)
    assert list(members)[-3:] == ["lip.npy", "lip_valid.npy", "speaker.npy"]    # base members first, then sorted
    back = decode_sample(members)
    assert np.array_equal(back["arrays"]["lip"], arrays["lip"]) and back["arrays"]["speaker"].dtype == np.float32


@pytest.mark.parametrize("task, breakage, expected", [
    ("visual_tts", lambda a: a.update(lip=None), "lip: missing for task visual_tts"),
    ("visual_tts", lambda a: a.update(lip=np.zeros((50, 88, 88), np.float16)), "lip: dtype"),
    ("visual_tts", lambda a: a.update(lip=np.zeros((50, 64, 64), np.uint8)), "lip: frame shape [64, 64]"),
    ("visual_tts", lambda a: a.update(lip=np.zeros((20, 88, 88), np.uint8)), "lip: 20 rows"),
    ("visual_tts", lambda a: a.update(lip_valid=None), "lip_valid: missing"),
    ("visual_tts", lambda a: a.update(lip_valid=np.ones(49, np.uint8)), "lip_valid: 49 flags"),
    ("visual_tts", lambda a: a.update(lip_valid=np.full(50, 2, np.uint8)), "lip_valid: 50 flags"),
    ("v2s", lambda a: a.update(lip=np.zeros((50, 88, 88), np.uint8)), "lip: present for task v2s"),
    ("tts", lambda a: a.update(speaker=None), "speaker: missing for task tts"),
    ("tts", lambda a: a.update(speaker=np.zeros(5, np.float32)), "speaker: dim 5"),
    ("tts", lambda a: a.update(speaker=np.full(4, np.nan, np.float32)), "speaker: non-finite"),
    ("v2s", lambda a: a.update(speaker=np.zeros(4, np.float32)), "speaker: present for task v2s"),
    ("tts", lambda a: a.update(sync=np.zeros((50, 8), np.float16)), "members ['sync'] are not in the contract"),
])
def test_stream_problems_are_named(task, breakage, expected):
    meta, arrays = good_with_streams(task)
    breakage(arrays)
    problems = check_sample(meta, arrays, with_streams())
    assert any(expected in p for p in problems), problems


def test_an_old_contract_refuses_stream_members():
    meta, arrays = good_with_streams("visual_tts")
    assert "members ['lip', 'lip_valid', 'speaker'] are not in the contract" in check_sample(meta, arrays, contract())


def test_folders_with_different_streams_are_refused_with_one_message():
    old, new, no_speaker = contract(), with_streams(), with_streams(speaker=None)
    with pytest.raises(ContractError) as e:
        require_same([("a", old), ("b", new)], "Train only on folders extracted with the same config and models.")
    assert str(e.value) == ("a and b carry different streams: video against video, lip, speaker. Folders are only "
                            "combined when they were extracted with the same streams (lip, sync, speaker options). "
                            "Train only on folders extracted with the same config and models.")
    with pytest.raises(ContractError, match="video, lip, speaker against video, lip"):
        require_same([("a", new), ("b", no_speaker)], "")
    # same streams, other settings: the field-by-field message names the field
    other = with_streams(streams={"lip": {**LIP, "fps": 30.0}})
    with pytest.raises(ContractError, match=r"streams\.lip\.fps: 25\.0 != 30\.0"):
        require_same([("a", new), ("b", other)], "")
    assert require_same([("a", new), ("b", with_streams())], "") == new


def test_the_trainers_loader_refuses_folders_whose_streams_differ(tmp_path):
    from model.data.plan import open_datasets

    for name, c in (("old", contract()), ("new", with_streams())):
        (tmp_path / name).mkdir()
        write_dataset_json(tmp_path / name, c, job="extract", config={})
    with pytest.raises(ContractError, match="carry different streams: video against video, lip, speaker"):
        open_datasets([tmp_path / "old", tmp_path / "new"])
    assert open_datasets([tmp_path / "new"]).streams == {"lip": LIP}
