"""The time-sensitive conditions through the extract job (Ray): lip and speaker by default, lip/sync encoders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from manifests.schema import write_manifest
from pipeline.cli.app import app
from pipeline.jobs.extract import run_extract
from stages.audio import decode_flac
from stages.format import rates
from stages.format.contract import ContractError, read_dataset_json
from stages.format.shard_io import iter_samples
from tests.conftest import extract_config


def samples(out: Path) -> list[dict]:
    return list(iter_samples(sorted((out / "shards").glob("*.tar"))))


def opening_and_envelope(sample: dict) -> tuple[np.ndarray, np.ndarray]:
    """The mouth-opening signal (darkness of the crop's centre) and the speech envelope, at 25 fps, valid rows."""
    lip, valid = sample["arrays"]["lip"].astype(np.float32), sample["arrays"]["lip_valid"].astype(bool)
    opening = -lip[:, 30:70, 20:68].mean(axis=(1, 2))                     # the opening is dark
    wave, rate = decode_flac(sample["flac"])
    half = int(0.02 * rate)
    centres = (np.arange(len(lip)) / rates.LIP_FPS * rate).astype(int)
    envelope = np.array([np.sqrt(np.mean(wave[max(c - half, 0):c + half] ** 2)) for c in centres])
    return opening[valid], envelope[valid]


def test_dataset_json_describes_every_stream(extracted):
    out, _ = extracted
    contract, doc = read_dataset_json(out)
    streams = doc["conditions"]["streams"]
    assert sorted(streams) == ["lip", "video"]
    assert streams["video"]["fps"] == 10.0 and streams["video"]["rule"] == "presentation-time"
    lip = streams["lip"]
    assert (lip["fps"], lip["region"], lip["dtype"], lip["frame_shape"]) == (25.0, "mouth", "uint8", [88, 88])
    assert lip["tasks"] == ["joint", "visual_tts"] and lip["valid"] is True
    assert lip["encoder"]["mouth"]["detector"] == "opencv-haar/haarcascade_frontalface_default.xml"
    speaker = doc["conditions"]["speaker"]
    assert speaker["dim"] == 256 and speaker["encoder"]["name"] == "resemblyzer"
    assert {"lip.npy", "lip_valid.npy", "speaker.npy"} <= set(contract.members)


def test_samples_carry_the_lip_stream_and_the_speaker_reference_by_task(extracted):
    out, _ = extracted
    by_task: dict[str, list] = {}
    for s in samples(out):
        by_task.setdefault(s["meta"]["task"], []).append(s)
        lip, speaker = s["arrays"].get("lip"), s["arrays"].get("speaker")
        if s["meta"]["task"] in ("visual_tts", "joint"):
            assert lip.dtype == np.uint8 and lip.shape[1:] == (88, 88)
            assert abs(len(lip) - rates.frames_in(s["meta"]["duration_s"], 25.0)) <= 1
            assert len(s["arrays"]["lip_valid"]) == len(lip) and 0 <= s["meta"]["face_share"] <= 1
        else:
            assert lip is None and s["arrays"].get("lip_valid") is None
        if s["meta"]["task"] == "v2s":
            assert speaker is None
        else:
            assert speaker.dtype == np.float32 and speaker.shape == (256,)
            assert abs(np.linalg.norm(speaker) - 1) < 1e-4
    assert all(s["meta"]["face_share"] == 1.0 for s in by_task["visual_tts"])


def test_the_lip_stream_follows_the_speech(extracted):
    """Done means: a talking clip's mouth-opening signal correlates with its speech envelope."""
    out, _ = extracted
    talking = [s for s in samples(out) if s["meta"]["task"] == "visual_tts"]
    r = [np.corrcoef(*opening_and_envelope(s))[0, 1] for s in talking]
    # Measured on the sample corpus: r = 0.90 to 0.97 over its five visual_tts clips (BENCHMARKS.md).
    assert len(r) == 5 and min(r) > 0.8, r


def test_no_face_is_rejected_by_the_lip_stage(extracted):
    out, _ = extracted
    rejects = {r["clip_id"]: r for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    assert (rejects["bad_no_face"]["stage"], rejects["bad_no_face"]["reason"]) == ("lip", "no_face")


@pytest.fixture(scope="module")
def with_encoders(corpus, tiny_clip, ray_session, tmp_path_factory):
    """Three clips (visual_tts, v2s, tts) extracted with tiny lip and sync encoders."""
    from stages.lip import LipConfig
    from stages.sync import SyncConfig
    from stages.tiny_encoders import make_tiny_lip_encoder, make_tiny_sync_encoder

    root = tmp_path_factory.mktemp("streams")
    lip, sync = make_tiny_lip_encoder(root / "lip"), make_tiny_sync_encoder(root / "sync")
    table = pq.read_table(corpus.manifest)
    keep = [cid for cid in table["clip_id"].to_pylist()
            if cid in ("visual_tts_enm3_mp4_000", "v2s_bluetriangle_mp4_000") or cid.startswith("tts_engb_wav22k")]
    assert len(keep) == 3, keep
    manifest = write_manifest(table.filter(pc.is_in(table["clip_id"], value_set=pa.array(keep))), root / "m.parquet")
    out = root / "out"
    config = extract_config(tiny_clip, lip=LipConfig(model_dir=str(lip)), sync=SyncConfig(model_dir=str(sync)))
    report = run_extract(manifest=manifest, data_root=corpus.root, out_dir=out, config=config)
    return out, report


def test_lip_and_sync_encoders_through_the_job(with_encoders):
    out, report = with_encoders
    assert report["counts"]["kept"] == 3, json.dumps(report["rejects"])
    contract, _ = read_dataset_json(out)
    assert contract.streams["lip"]["dtype"] == "float16" and contract.streams["sync"]["frame_shape"] == [8]
    by_task = {s["meta"]["task"]: s for s in samples(out)}
    lip = by_task["visual_tts"]["arrays"]["lip"]
    assert lip.dtype == np.float16 and lip.shape[1] == 16
    for task in ("visual_tts", "v2s"):
        sync = by_task[task]["arrays"]["sync"]
        assert sync.dtype == np.float16 and sync.shape[1] == 8
        assert abs(len(sync) - rates.frames_in(by_task[task]["meta"]["duration_s"], 25.0)) <= 1
    assert by_task["tts"]["arrays"].get("sync") is None and by_task["v2s"]["arrays"].get("lip") is None
    assert set(report["stage_seconds"]) >= {"lip", "lip_encoder", "sync", "speaker", "visual"}


def test_the_trainer_refuses_to_mix_folders_whose_streams_differ(extracted, with_encoders):
    from model.data.plan import open_datasets

    with pytest.raises(ContractError, match="carry different streams: video, lip, speaker against video, lip, "
                                            "sync, speaker"):
        open_datasets([extracted[0], with_encoders[0]])


def test_a_missing_lip_model_fails_before_work(corpus, tiny_clip, tmp_path):
    result = CliRunner().invoke(app, ["run", "extract", "--manifest", str(corpus.manifest), "--data-root",
                                      str(corpus.root), "--out", str(tmp_path / "o"), "--visual-model",
                                      str(tiny_clip), "--lip-model", str(tmp_path / "no-lip")])
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert "lip encoder directory not found" in said and "no-lip" in said
    assert not (tmp_path / "o").exists()
