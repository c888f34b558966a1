"""The VSSFlow network (CPU, tiny preset): shapes, masking, conditioning, and that it can learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.batch import collate
from model.flow import FlowMatching
from tests.model.helpers import VIDEO_DIM, mixed_batch, mixed_samples, model_inputs, tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_forward_shapes_padded_batch_without_video_or_phones():
    model, batch = tiny_model(randomize_output=True), mixed_batch()
    v = model(**model_inputs(batch))
    assert v.shape == batch["x1"].shape == (3, 20, 256)
    assert torch.isfinite(v).all()
    assert (v[~batch["audio_mask"]] == 0).all()          # padded frames: zero velocity
    assert v[batch["audio_mask"]].abs().sum() > 0

    # A batch with no video at all: Tv = 0 from collate, or video=None.
    tts = collate([{"task": "tts", "audio": np.zeros((10, 256)), "phone_ids": [1, 2]}], video_dim=VIDEO_DIM)
    assert tts["video"].shape == (1, 0, VIDEO_DIM)
    v_empty = model(**model_inputs(tts))
    v_none = model(**{**model_inputs(tts), "video": None, "video_mask": None})
    assert v_empty.shape == (1, 10, 256) and torch.isfinite(v_empty).all()
    torch.testing.assert_close(v_empty, v_none)


def test_zero_initialised_output_gives_zero_velocity():
    model, batch = tiny_model(), mixed_batch()
    assert (model.out_proj.weight == 0).all() and (model.out_proj.bias == 0).all()
    assert (model(**model_inputs(batch)) == 0).all()


def test_padding_does_not_leak_into_valid_frames():
    model, batch = tiny_model(randomize_output=True), mixed_batch()
    inputs = model_inputs(batch)
    ref = model(**inputs)
    pad_audio, pad_video = ~batch["audio_mask"], ~batch["video_mask"]
    assert pad_audio.any() and pad_video.any()
    x_t, phones, video = inputs["x_t"].clone(), inputs["phones_track"].clone(), inputs["video"].clone()
    x_t[pad_audio] = 100.0
    phones[pad_audio] = 7
    video[pad_video] = -50.0
    out = model(**{**inputs, "x_t": x_t, "phones_track": phones, "video": video})
    valid = batch["audio_mask"]
    torch.testing.assert_close(out[valid], ref[valid], atol=1e-5, rtol=1e-5)


def test_cross_attention_uses_the_video_per_sample():
    model, batch = tiny_model(randomize_output=True), mixed_batch()
    inputs = model_inputs(batch)
    ref = model(**inputs)
    video = inputs["video"].clone()
    video[0] = torch.randn_like(video[0])
    out = model(**{**inputs, "video": video})
    assert (out[0] - ref[0]).abs().max() > 1e-3                 # sample 0 sees its new video
    torch.testing.assert_close(out[1:], ref[1:], atol=1e-6, rtol=0)  # the others do not

    # A dropped video (all-False mask) is not looked at, and the output stays finite.
    dropped = {**inputs, "video_mask": torch.zeros_like(inputs["video_mask"])}
    a = model(**dropped)
    b = model(**{**dropped, "video": video})
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert (a[0] - ref[0]).abs().max() > 1e-3


def test_video_frames_are_placed_on_the_audio_time_base():
    model, batch = tiny_model(randomize_output=True), mixed_batch()
    inputs = model_inputs(batch)
    _, _, positions = model._context(inputs["video"], inputs["video_mask"], 3, None, None, inputs["x_t"])
    assert positions.tolist() == [2.5 * j for j in range(8)] + [0.0]      # video row j at j/10 s; then the null token
    # Order matters: reversing sample 0's video frames changes its output (no bag-of-frames attention).
    video = inputs["video"].clone()
    video[0] = video[0].flip(0)
    out, ref = model(**{**inputs, "video": video}), model(**inputs)
    assert (out[0] - ref[0]).abs().max() > 1e-3


def test_phones_and_time_change_the_output():
    model, batch = tiny_model(randomize_output=True), mixed_batch()
    inputs = model_inputs(batch)
    ref = model(**inputs)
    out = model(**{**inputs, "phones_track": torch.zeros_like(inputs["phones_track"])})
    assert (out[1] - ref[1]).abs().max() > 1e-3                 # the tts sample had phones
    torch.testing.assert_close(out[0], ref[0], atol=1e-6, rtol=0)  # the v2s sample had none
    out_t = model(**{**inputs, "t": torch.full((3,), 0.9)})
    assert (out_t - ref).abs().max() > 1e-3


def test_gradients_are_finite_with_no_video():
    model, batch = tiny_model(randomize_output=True), mixed_batch()
    inputs = {**model_inputs(batch), "video_mask": torch.zeros_like(batch["video_mask"])}
    model(**inputs).square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_reference_token_and_input_checks():
    model, batch = tiny_model(randomize_output=True, ref_token=True, ref_dim=16), mixed_batch()
    inputs = model_inputs(batch)
    ref_vec = torch.randn(3, 16)
    with_ref = model(**inputs, ref=ref_vec)
    masked = model(**inputs, ref=ref_vec, ref_mask=torch.tensor([False, True, True]))
    no_ref = model(**inputs)
    assert (with_ref[0] - masked[0]).abs().max() > 1e-4
    torch.testing.assert_close(masked[1:], with_ref[1:], atol=1e-6, rtol=0)
    torch.testing.assert_close(masked[0], no_ref[0], atol=1e-6, rtol=0)

    plain = tiny_model()
    with pytest.raises(ValueError, match="ref_token"):
        plain(**inputs, ref=ref_vec)
    with pytest.raises(ValueError, match="audio_dim"):
        plain(**{**inputs, "x_t": inputs["x_t"][..., :128]})
    long_video = torch.zeros(3, plain.cfg.max_video_frames + 1, VIDEO_DIM)
    with pytest.raises(ValueError, match="max_video_frames"):
        plain(**{**inputs, "video": long_video, "video_mask": torch.ones(long_video.shape[:2], dtype=torch.bool)})


# ------------------------------------------------------------------------------------------------------------ learning


def test_tiny_model_overfits_four_samples():
    """Gradients reach every part through the zero-initialised output: 200 Adam steps fit 4 fixed
    (x_t, t, conditions) -> velocity pairs (fixed noise and times, so the target is learnable exactly)."""
    model = tiny_model(seed=0).train()
    fm, g = FlowMatching(), torch.Generator().manual_seed(0)
    rng = np.random.default_rng(1)
    joint = {"task": "joint", "audio": rng.standard_normal((18, 256)), "video": rng.standard_normal((7, VIDEO_DIM)),
             "phone_ids": np.array([9, 2, 11, 4]), "speech_span_s": (0.2, 0.6)}
    batch = collate(mixed_samples(seed=1) + [joint])
    x1 = batch["x1"]
    x0, t = fm.sample_x0(x1, g), fm.sample_t(x1.shape[0], g)
    x_t, target = fm.interpolate(x0, x1, t), fm.target(x0, x1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        pred = model(x_t, t, batch["phones_track"], batch["video"], batch["video_mask"], batch["audio_mask"])
        loss = fm.loss(pred, target, batch["audio_mask"]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.3 * losses[0], (losses[0], losses[-10:])
