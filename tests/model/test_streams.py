"""The time-sensitive conditions inside the model: streams resampled by presentation time, masks for missing streams,
the speaker token, per-group condition dropout, and the reference preset's shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.batch import collate, conditions, resample_stream
from model.config import reference_config
from model.dit import VSSFlowDiT, count_parameters
from model.flow import DROP_GROUPS, drop_conditions, null_conditions, without_streams
from tests.model.helpers import VIDEO_DIM, tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LIP = {"lip": {"kind": "crops", "shape": [88, 88], "dim": 16}}
SYNC = {"sync": {"kind": "features", "shape": [12], "dim": 8}}


def test_a_stream_is_resampled_to_the_audio_frames_by_presentation_time():
    # audio frame k is centred at (k + 0.5) / 25 s and takes the stream row on screen then: floor(centre * fps)
    rows = np.arange(10)[:, None].astype(np.float32)                                 # rows 0..9, value = index
    at_10, mask = resample_stream(rows, None, fps=10.0, n_frames=30)
    centres = (np.arange(30) + 0.5) / 25
    assert np.array_equal(at_10[:25, 0], np.floor(centres[:25] * 10))                # 2 or 3 audio frames per row
    assert mask[:25].all() and not mask[25:].any() and not at_10[25:].any()          # past 1.0 s: no row, masked
    same, mask = resample_stream(rows, None, fps=25.0, n_frames=10)
    assert np.array_equal(same, rows) and mask.all()                                  # the audio's rate: identity
    ntsc, _ = resample_stream(np.arange(30)[:, None], None, fps=30000 / 1001, n_frames=25)
    assert np.array_equal(ntsc[:, 0], np.floor(centres[:25] * 30000 / 1001))         # a rate that is no multiple
    valid = np.ones(10, np.uint8)
    valid[3] = 0                                                                      # no face in row 3
    picked, mask = resample_stream(rows, valid, fps=10.0, n_frames=25)
    hidden = np.floor(centres[:25] * 10) == 3
    assert not mask[hidden].any() and mask[~hidden].all() and not picked[hidden].any()


def test_collate_masks_what_a_sample_lacks():
    crops = np.full((12, 88, 88), 200, np.uint8)
    samples = [{"task": "visual_tts", "audio": np.zeros((12, 256)), "video": np.zeros((5, VIDEO_DIM)),
                "phone_ids": [1, 2], "streams": {"lip": (crops, np.ones(12, bool))}, "speaker": np.ones(256)},
               {"task": "v2s", "audio": np.zeros((16, 256)), "video": np.zeros((6, VIDEO_DIM))}]
    batch = collate(samples, streams={"lip": ((88, 88), np.dtype("uint8"))}, ref_dim=256)
    assert batch["streams"]["lip"].shape == (2, 16, 88, 88) and batch["streams"]["lip"].dtype == torch.uint8
    assert batch["stream_masks"]["lip"][0, :12].all() and not batch["stream_masks"]["lip"][0, 12:].any()
    assert not batch["stream_masks"]["lip"][1].any() and not batch["streams"]["lip"][1].any()
    assert batch["ref_mask"].tolist() == [True, False] and not batch["ref"][1].any()
    assert set(conditions(batch)) == {"phones_track", "video", "video_mask", "audio_mask", "ref", "ref_mask",
                                      "streams", "stream_masks"}
    with pytest.raises(ValueError, match="speaker reference has 3 dims"):
        collate([dict(samples[0], speaker=np.ones(3))], streams=None, ref_dim=256)


def _inputs(model: VSSFlowDiT, crops: torch.Tensor, lip_mask: torch.Tensor, ref_mask: torch.Tensor) -> dict:
    B, T = lip_mask.shape
    g = torch.Generator().manual_seed(3)
    return {"x_t": torch.randn(B, T, 256, generator=g), "t": torch.full((B,), 0.4),
            "phones_track": torch.zeros(B, T, dtype=torch.long), "video": torch.randn(B, 4, VIDEO_DIM, generator=g),
            "video_mask": torch.ones(B, 4, dtype=torch.bool), "audio_mask": torch.ones(B, T, dtype=torch.bool),
            "streams": {"lip": crops}, "stream_masks": {"lip": lip_mask},
            "ref": torch.randn(B, 256, generator=g), "ref_mask": ref_mask}


def test_the_model_uses_a_stream_where_it_is_valid_and_ignores_it_where_masked():
    model = tiny_model(randomize_output=True, streams=LIP, ref_token=True)
    B, T = 2, 10
    crops = torch.randint(0, 255, (B, T, 88, 88), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    on, off = torch.ones(B, T, dtype=torch.bool), torch.zeros(B, T, dtype=torch.bool)
    with torch.no_grad():
        base = model(**_inputs(model, crops, off, torch.ones(B, dtype=torch.bool)))
        other_pixels = model(**_inputs(model, 255 - crops, off, torch.ones(B, dtype=torch.bool)))
        used = model(**_inputs(model, crops, on, torch.ones(B, dtype=torch.bool)))
        left_out = model(**{**_inputs(model, crops, off, torch.ones(B, dtype=torch.bool)), "streams": None,
                            "stream_masks": None})
        no_speaker = model(**_inputs(model, crops, off, torch.zeros(B, dtype=torch.bool)))
    assert torch.equal(base, other_pixels) and torch.equal(base, left_out)   # masked frames are not looked at
    assert not torch.allclose(base, used, atol=1e-4)                          # valid frames are
    assert not torch.allclose(base, no_speaker, atol=1e-4)                    # the speaker token too
    one_frame = off.clone()
    one_frame[0, 4] = True
    with torch.no_grad():
        local = model(**_inputs(model, crops, one_frame, torch.ones(B, dtype=torch.bool)))
    assert torch.equal(local[1], base[1])                                     # the other sample is untouched
    with pytest.raises(ValueError, match="built for"):
        model(**{**_inputs(model, crops, on, torch.ones(B, dtype=torch.bool)), "streams": {"sync": crops}})


def test_features_streams_and_positions_none_run_and_differ_from_rope():
    torch.manual_seed(0)
    cfg = dict(streams=SYNC, video_positions="none")
    a, b = tiny_model(randomize_output=True, **cfg), tiny_model(randomize_output=True, streams=SYNC)
    B, T = 2, 8
    inputs = {"x_t": torch.randn(B, T, 256), "t": torch.full((B,), 0.5), "phones_track": torch.zeros(B, T).long(),
              "video": torch.randn(B, 3, VIDEO_DIM), "video_mask": torch.ones(B, 3, dtype=torch.bool),
              "audio_mask": torch.ones(B, T, dtype=torch.bool), "streams": {"sync": torch.randn(B, T, 12)},
              "stream_masks": {"sync": torch.ones(B, T, dtype=torch.bool)}}
    with torch.no_grad():
        out_none, out_rope = a(**inputs), b(**inputs)
        shifted = a(**{**inputs, "video": inputs["video"].roll(1, dims=1)})
    assert out_none.shape == out_rope.shape == (B, T, 256) and not torch.allclose(out_none, out_rope)
    # without time positions the CLIP keys are a set: reordering the video frames changes nothing
    torch.testing.assert_close(out_none, shifted, atol=1e-5, rtol=1e-4)


def test_per_group_dropout_rates_over_many_samples():
    B, T = 20_000, 3
    cond = {"audio_mask": torch.ones(B, T, dtype=torch.bool), "video_mask": torch.ones(B, 2, dtype=torch.bool),
            "phones_track": torch.ones(B, T, dtype=torch.long), "stream_masks": {"lip": torch.ones(B, T, dtype=torch.bool)},
            "ref": torch.zeros(B, 4), "ref_mask": torch.ones(B, dtype=torch.bool)}
    p = {"p_all": 0.1, "p_video": 0.2, "p_text": 0.3, "p_streams": 0.4, "p_speaker": 0.5}
    out = drop_conditions(cond, generator=torch.Generator().manual_seed(0), **p)
    dropped = {"video": ~out["video_mask"][:, 0], "text": out["phones_track"][:, 0] == 0,
               "streams": ~out["stream_masks"]["lip"][:, 0], "speaker": ~out["ref_mask"]}
    everything = dropped["video"] & dropped["text"] & dropped["streams"] & dropped["speaker"]
    tolerance = 4 * (0.25 / B) ** 0.5                                             # 4 standard errors
    for group, rate in dropped.items():
        expected = 1 - (1 - p["p_all"]) * (1 - p[f"p_{group}"])                   # its own draw or "all"
        assert abs(float(rate.float().mean()) - expected) < tolerance, group
    assert abs(float(everything.float().mean()) - (0.1 + 0.9 * 0.2 * 0.3 * 0.4 * 0.5)) < tolerance
    assert abs(float((dropped["video"] & dropped["text"]).float().mean()) - (0.1 + 0.9 * 0.2 * 0.3)) < tolerance
    assert len(DROP_GROUPS) == 5
    null = null_conditions(cond)
    assert not null["stream_masks"]["lip"].any() and not null["ref_mask"].any() and not null["video_mask"].any()
    assert not without_streams(cond)["stream_masks"]["lip"].any() and cond["stream_masks"]["lip"].all()


def test_the_reference_preset_has_the_authors_shapes():
    cfg = reference_config()
    assert (cfg.depth, cfg.width, cfg.heads, cfg.audio_dim, cfg.phone_dim) == (10, 1536, 24, 128, 32)
    with torch.device("meta"):
        model = VSSFlowDiT(cfg)
    # input per audio frame: [latent 128 | phones 32 | lip 1024 | sync 768] (the reference's order differs only in
    # where the columns sit); the cross-attention context [speaker | CLIP] without time positions
    assert model.in_proj.in_features == 128 + 1024 + 32 + 768 == 1952
    assert {n: s["dim"] for n, s in cfg.streams.items()} == {"lip": 1024, "sync": 768}
    assert cfg.ref_token and cfg.ref_dim == 256 and cfg.video_positions == "none"
    n = count_parameters(model)
    assert n == 465_749_312 and abs(n - 464e6) / 464e6 < 0.005                   # the reference: about 464M
