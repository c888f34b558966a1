"""Local encoder directories (lip, sync) and the frames each stream reads: loaded as real ones, refused when broken."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stages.encoder_dir import MODEL_FILE, check_encoder_dir, describe_encoder_dir
from stages.frames import FrameNeed, frame_indices_at, read_stream_frames
from stages.lip import LipEncoderStage
from stages.model_dir import ModelDirError
from stages.sync import SyncEncoderStage
from stages.tiny_encoders import make_tiny_lip_encoder, make_tiny_sync_encoder


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return {"lip": make_tiny_lip_encoder(root / "lip"), "sync": make_tiny_sync_encoder(root / "sync", window=8)}


def broken_copies(src, tmp_path):
    """(what was broken, directory, the words the error must say)."""
    import shutil

    cases = []

    def copy(name):
        d = tmp_path / name
        shutil.copytree(src, d)
        return d

    cases.append(("missing", tmp_path / "absent", "directory not found"))
    d = copy("no_config")
    (d / "config.json").unlink()
    cases.append(("no config", d, "has no config.json"))
    d = copy("bad_json")
    (d / "config.json").write_text("{not json")
    cases.append(("bad json", d, "is unreadable"))
    d = copy("wrong_kind")
    (d / "config.json").write_text(json.dumps({**json.loads((src / "config.json").read_text()), "kind": "sync"}))
    cases.append(("wrong kind", d, "holds a 'sync' encoder, not a 'lip' one"))
    d = copy("no_dim")
    cfg = json.loads((src / "config.json").read_text())
    del cfg["dim"]
    (d / "config.json").write_text(json.dumps(cfg))
    cases.append(("no dim", d, "'dim' must be a positive number, got None"))
    d = copy("no_model")
    (d / MODEL_FILE).unlink()
    cases.append(("no model", d, f"has no {MODEL_FILE}"))
    d = copy("truncated")
    data = (d / MODEL_FILE).read_bytes()
    (d / MODEL_FILE).write_bytes(data[: len(data) // 2])
    cases.append(("truncated", d, "is not a TorchScript archive"))
    d = copy("pickled")
    import torch

    torch.save({"weights": torch.zeros(2)}, d / MODEL_FILE)
    cases.append(("pickled", d, "is not a TorchScript archive"))
    return cases


def test_broken_encoder_directories_are_refused_with_the_path(encoders, tmp_path):
    for what, directory, words in broken_copies(encoders["lip"], tmp_path):
        with pytest.raises(ModelDirError) as e:
            check_encoder_dir(directory, "lip")
        assert words in str(e.value) and str(directory.name) in str(e.value), what


def test_a_broken_lip_or_sync_model_fails_before_any_work(encoders, tmp_path, tiny_clip):
    from pipeline.jobs.extract import ExtractConfig, build_contract
    from stages.lip import LipConfig
    from stages.sync import SyncConfig
    from stages.visual import VisualConfig

    visual = VisualConfig(model_dir=str(tiny_clip))
    with pytest.raises(ModelDirError, match="lip encoder directory not found"):
        build_contract(ExtractConfig(visual=visual, lip=LipConfig(model_dir=str(tmp_path / "nope"))))
    with pytest.raises(ModelDirError, match="holds a 'lip' encoder, not a 'sync' one"):
        build_contract(ExtractConfig(visual=visual, sync=SyncConfig(model_dir=str(encoders["lip"]))))
    contract = build_contract(ExtractConfig(visual=visual, lip=LipConfig(model_dir=str(encoders["lip"])),
                                            sync=SyncConfig(model_dir=str(encoders["sync"]))))
    assert contract.streams["lip"]["dtype"] == "float16" and contract.streams["lip"]["frame_shape"] == [16]
    assert contract.streams["sync"]["fps"] == 25.0 and contract.streams["sync"]["encoder"]["window"] == 8
    assert contract.video_encoder["scaler"] == "opencv"


def test_lip_encoder_features(encoders):
    stage = LipEncoderStage(model_dir=str(encoders["lip"]), batch_frames=16, device="cpu")
    crops = np.random.default_rng(0).integers(0, 255, (40, 88, 88), dtype=np.uint8)
    rows = stage([{"task": "visual_tts", "lip": crops}, {"task": "v2s", "lip": None}])
    assert rows[0]["lip"].shape == (40, 16) and rows[0]["lip"].dtype == np.float16
    assert rows[1]["lip"] is None
    # batching does not change the features of this per-frame encoder
    whole = LipEncoderStage(model_dir=str(encoders["lip"]), batch_frames=64, device="cpu")
    [again] = whole([{"task": "visual_tts", "lip": crops}])
    assert np.allclose(again["lip"].astype(np.float32), rows[0]["lip"].astype(np.float32), atol=1e-2)
    assert describe_encoder_dir(encoders["lip"], "lip")["random_init"] is True


def test_a_hugging_face_layout_lip_encoder(tmp_path):
    from stages.tiny_encoders import make_tiny_hf_lip_encoder

    model = make_tiny_hf_lip_encoder(tmp_path / "hf-lip", window=8)
    info = describe_encoder_dir(model, "lip")
    assert (info["format"], info["dim"], info["input_size"]) == ("hf", 16, 88)
    stage = LipEncoderStage(model_dir=str(model), device="cpu")
    crops = np.random.default_rng(2).integers(0, 255, (21, 88, 88), dtype=np.uint8)     # 2.6 windows of 8
    [row] = stage([{"task": "visual_tts", "lip": crops}])
    assert row["lip"].shape == (21, 16) and row["lip"].dtype == np.float16
    [head] = stage([{"task": "visual_tts", "lip": crops[:16]}])                            # whole windows agree
    assert np.allclose(head["lip"].astype(np.float32), row["lip"][:16].astype(np.float32), atol=1e-2)
    (model / "model.safetensors").unlink()
    with pytest.raises(ModelDirError, match="has no weights"):
        check_encoder_dir(model, "lip")


def test_sync_encoder_windows_cover_the_clip(encoders):
    from stages.audio import encode_flac, quantize_pcm16

    stage = SyncEncoderStage(model_dir=str(encoders["sync"]), device="cpu")
    frames = np.random.default_rng(1).integers(0, 255, (37, 64, 64, 3), dtype=np.uint8)   # 4.6 windows of 8
    wave = np.sin(np.arange(int(37 / 25 * 16000)) / 9.0).astype(np.float32) * 0.3
    [row] = stage([{"task": "v2s", "sync_frames": frames, "flac": encode_flac(quantize_pcm16(wave), 16000)}])
    assert row["sync"].shape == (37, 8) and row["sync"].dtype == np.float16 and "sync_frames" not in row
    # a window's rows depend only on its own frames and audio: the first 32 rows equal those of a 32-frame clip
    [head] = stage([{"task": "v2s", "sync_frames": frames[:32], "flac": encode_flac(quantize_pcm16(wave), 16000)}])
    assert np.array_equal(head["sync"], row["sync"][:32])


def test_every_frame_is_decoded_once_for_all_streams():
    starts = np.arange(0, 3.0, 1 / 30)                                   # a 30 fps source
    decoded: list[int] = []

    def read(indices):
        decoded.extend(indices.tolist())
        frames = np.zeros((len(indices), 48, 64, 3), np.uint8)
        frames[:, :, :, 0] = np.asarray(indices, np.uint8)[:, None, None]   # each frame carries its index
        return frames

    needs = [FrameNeed("frames", 10.0, "rgb", 32), FrameNeed("lip_frames", 25.0, "grey", 40)]
    out = read_stream_frames(read, starts, 0.2, 2.0, needs)
    assert sorted(decoded) == sorted(set(decoded))                      # no frame decoded twice
    assert out["frames"].shape == (20, 32, 32, 3) and out["lip_frames"].shape == (50, 30, 40)
    t_v, t_l = 0.2 + np.arange(20) / 10, 0.2 + np.arange(50) / 25
    assert out["frames"][:, 0, 0, 0].tolist() == frame_indices_at(t_v, starts).tolist()
    assert set(decoded) == set(frame_indices_at(t_v, starts)) | set(frame_indices_at(t_l, starts))
