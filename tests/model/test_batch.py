"""Batch collation: phone tracks stretched over the speech span, mel patches, padding and masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.batch import collate, patch_mel, span_frames, stretch_phones, unpatch_mel
from tests.model.helpers import VIDEO_DIM, mixed_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_stretch_phones():
    ids = np.array([5, 6, 7], dtype=np.int16)
    assert stretch_phones(ids, 10, 2, 8).tolist() == [0, 0, 5, 5, 6, 6, 7, 7, 0, 0]
    assert stretch_phones(ids, 7, 0, 7).tolist() == [5, 5, 5, 6, 6, 7, 7]
    assert stretch_phones(ids, 6, 4, 100).tolist() == [0, 0, 0, 0, 5, 6]        # span clipped to the track
    assert stretch_phones(ids, 5, 3, 3).tolist() == [0] * 5                     # empty span
    assert stretch_phones(np.array([], dtype=np.int16), 4, 0, 4).tolist() == [0] * 4
    assert stretch_phones([1, 2, 3, 4], 2, 0, 2).tolist() == [1, 3]             # more phones than frames
    assert stretch_phones(ids, 4, 0, 4).dtype == torch.int64
    assert span_frames((0.1, 0.5), 25) == (2, 13)


def test_patch_and_unpatch_mel():
    mel = torch.randn(1003, 64)
    patches = patch_mel(mel.numpy().astype(np.float16))
    assert patches.shape == (250, 256) and patches.dtype == torch.float32
    k, j, b = 17, 2, 40
    assert patches[k, 64 * j + b] == mel[4 * k + j, b].half().float()
    torch.testing.assert_close(unpatch_mel(patch_mel(mel)), mel[:1000])
    p = torch.randn(9, 256)
    torch.testing.assert_close(patch_mel(unpatch_mel(p)), p)
    with pytest.raises(ValueError):
        patch_mel(torch.zeros(8, 80), n_mels=64)                            # the contract's band count is enforced
    assert patch_mel(torch.zeros(8, 80)).shape == (2, 320)                 # else the mel's own is used
    assert unpatch_mel(torch.zeros(2, 320)).shape == (8, 80)
    with pytest.raises(ValueError):
        unpatch_mel(torch.zeros(2, 322))


def test_collate_pads_and_masks_absent_conditions():
    batch = mixed_batch()
    assert batch["x1"].shape == (3, 20, 256) and batch["x1"].dtype == torch.float32
    assert batch["audio_mask"].sum(1).tolist() == [20, 16, 12]
    assert (batch["x1"][~batch["audio_mask"]] == 0).all()
    assert batch["video"].shape == (3, 8, VIDEO_DIM)
    assert batch["video_mask"].sum(1).tolist() == [8, 0, 5]             # tts: no video, masked
    assert (batch["phones_track"][0] == 0).all()                        # v2s: no text
    tts = batch["phones_track"][1]                                      # span 0.1-0.5 s -> frames 2..12
    assert (tts[:2] == 0).all() and (tts[13:] == 0).all() and (tts[2:13] > 0).all()
    assert tts[2:13].unique().tolist() == list(range(1, 9))
    assert batch["phones_track"][2, :12].tolist() == [3] * 4 + [4] * 4 + [5] * 4
    assert batch["task"] == ["v2s", "tts", "visual_tts"]

    with pytest.raises(ValueError, match="video_dim"):
        collate([{"task": "tts", "audio": np.zeros((4, 8)), "phone_ids": [1]}])
    with pytest.raises(ValueError, match="task"):
        collate([{"task": "music", "audio": np.zeros((4, 8))}], video_dim=4)
    with pytest.raises(ValueError, match="audio"):
        collate([{"task": "tts", "audio": np.zeros((4, 8))}, {"task": "tts", "audio": np.zeros((4, 9))}], video_dim=4)
    with pytest.raises(ValueError, match="video"):
        collate([{"task": "v2s", "audio": np.zeros((4, 8)), "video": np.zeros((2, 5))}], video_dim=4)
