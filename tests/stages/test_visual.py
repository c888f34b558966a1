"""The visual stage alone: local CLIP loading, shapes, batching across clips, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stages.model_dir import ModelDirError, check_model_dir
from stages.visual import ClipEncoder, VisualEncoderStage, encode_in_fixed_chunks, load_encoder


def frames(n, seed):
    return np.random.default_rng(seed).integers(0, 255, size=(n, 224, 224, 3), dtype=np.uint8)


def test_stage_encodes_each_clip_at_its_length(tiny_clip):
    stage = VisualEncoderStage(model_dir=str(tiny_clip), batch_frames=7)
    rows = stage([{"clip_id": "a", "frames": frames(12, 0)}, {"clip_id": "tts", "frames": None},
                  {"clip_id": "b", "frames": frames(5, 1)}])
    assert rows[0]["video"].shape == (12, 32) and rows[0]["video"].dtype == np.float16
    assert rows[1]["video"] is None
    assert rows[2]["video"].shape == (5, 32)
    assert all(r["frames"] is None for r in rows)


def test_features_do_not_depend_on_batch_neighbours(tiny_clip):
    """Equal to the bit: extract, a resumed extract and generate batch a clip with different neighbours."""
    stage = VisualEncoderStage(model_dir=str(tiny_clip), batch_frames=8)
    alone = stage([{"frames": frames(6, 2)}])[0]["video"]
    together = stage([{"frames": frames(9, 3)}, {"frames": frames(6, 2)}])[1]["video"]   # straddles two chunks
    assert np.array_equal(alone, together)


def test_every_encoder_call_has_the_same_batch_shape(tiny_clip):
    """A BLAS may choose its kernel by shape (cuBLAS does): one shape for every call keeps features batch-free."""
    encoder = load_encoder("clip", str(tiny_clip))
    shapes = []

    class Recording:
        def encode(self, batch):
            shapes.append(batch.shape[0])
            return encoder.encode(batch)

    feats = encode_in_fixed_chunks(Recording(), frames(19, 4), 8)
    assert shapes == [8, 8, 8] and feats.shape == (19, 32)
    assert np.array_equal(feats[16:], encoder.encode(np.concatenate([frames(19, 4)[16:],
                                                                      np.zeros((5, 224, 224, 3), np.uint8)]))[:3])


def test_content_changes_features(tiny_clip):
    enc = load_encoder("clip", str(tiny_clip), precision="fp32")
    black = np.zeros((1, 224, 224, 3), np.uint8)
    white = np.full((1, 224, 224, 3), 255, np.uint8)
    assert np.abs(enc.encode(black) - enc.encode(white)).max() > 1e-3


def test_info_labels_random_test_encoder(tiny_clip):
    info = ClipEncoder(str(tiny_clip), precision="fp32").info()
    assert info["random_init"] is True and info["dim"] == 32 and info["image_size"] == 224


def test_bf16_features_match_fp32_within_tolerance(tiny_clip):
    """bf16 autocast (used where the CPU or GPU supports it) stays within the tolerance BENCHMARKS.md states:
    cosine similarity > 0.999 and relative L2 error < 1% per frame."""
    x = frames(8, 4)
    fp32 = ClipEncoder(str(tiny_clip), precision="fp32").encode(x)
    bf16 = ClipEncoder(str(tiny_clip), precision="bf16").encode(x)
    cos = (fp32 * bf16).sum(1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(bf16, axis=1))
    rel_l2 = np.linalg.norm(bf16 - fp32, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cos.min() > 0.999, cos
    assert rel_l2.max() < 0.01, rel_l2


def test_missing_or_broken_model_dirs_name_the_path(tmp_path):
    with pytest.raises(ModelDirError, match="not found: .*nowhere"):
        check_model_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match="no config.json"):
        check_model_dir(tmp_path / "empty")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text(json.dumps({}))
    with pytest.raises(ModelDirError, match="no weights"):
        check_model_dir(tmp_path / "noweights")
    with pytest.raises(ValueError, match="unknown visual encoder"):
        load_encoder("resnet", str(tmp_path))
