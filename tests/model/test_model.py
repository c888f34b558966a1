"""The VSSFlow network, the flow-matching objective and batch collation (CPU, tiny preset)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.batch import collate, patch_mel, span_frames, stretch_phones, unpatch_mel
from model.config import PRESETS, DiTConfig, preset
from model.dit import VSSFlowDiT, count_parameters
from model.flow import FlowMatching, cfg_velocity_fn, drop_conditions, guided_velocity, null_conditions

VIDEO_DIM, VOCAB = 32, 20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(seed: int = 0, randomize_output: bool = False, **overrides) -> VSSFlowDiT:
    torch.manual_seed(seed)
    model = VSSFlowDiT(preset("tiny", video_dim=VIDEO_DIM, phone_vocab_size=VOCAB, **overrides)).eval()
    if randomize_output:  # the zero-initialised output layer hides everything upstream
        torch.nn.init.normal_(model.out_proj.weight, std=0.5)
    return model


def mixed_samples(seed: int = 0, audio_dim: int = 256) -> list[dict]:
    """v2s (video, no text), tts (text, no video), visual_tts (both, shorter: padded), all at different lengths."""
    g = np.random.default_rng(seed)
    return [
        {"task": "v2s", "audio": g.standard_normal((20, audio_dim)).astype(np.float16),
         "video": g.standard_normal((8, VIDEO_DIM)).astype(np.float16)},
        {"task": "tts", "audio": g.standard_normal((16, audio_dim)).astype(np.float16),
         "phone_ids": np.arange(1, 9, dtype=np.int16), "speech_span_s": (0.1, 0.5)},
        {"task": "visual_tts", "audio": g.standard_normal((12, audio_dim)).astype(np.float16),
         "video": g.standard_normal((5, VIDEO_DIM)).astype(np.float16),
         "phone_ids": np.array([3, 4, 5], dtype=np.int16), "speech_span_s": None},
    ]


def mixed_batch(seed: int = 0) -> dict:
    return collate(mixed_samples(seed))


def model_inputs(batch: dict, t: torch.Tensor | None = None) -> dict:
    B = batch["x1"].shape[0]
    return {"x_t": torch.randn(batch["x1"].shape, generator=torch.Generator().manual_seed(1)),
            "t": torch.full((B,), 0.3) if t is None else t,
            "phones_track": batch["phones_track"], "video": batch["video"], "video_mask": batch["video_mask"],
            "audio_mask": batch["audio_mask"]}


# ---------------------------------------------------------------- config and size

def test_preset_parameter_counts_and_base_near_460m():
    for name in PRESETS:
        for audio_dim in (256, 128):
            with torch.device("meta"):
                n = count_parameters(VSSFlowDiT(preset(name, audio_dim=audio_dim)))
            print(f"{name:5s} audio_dim={audio_dim}: {n / 1e6:.1f}M parameters")
            if name == "base":
                assert abs(n - 460e6) / 460e6 < 0.05, n
    with torch.device("meta"):
        assert count_parameters(VSSFlowDiT(preset("small"))) < count_parameters(VSSFlowDiT(preset("base")))


def test_config_roundtrip_overrides_and_validation():
    cfg = preset("small", audio_dim=128, ref_token=True)
    assert cfg.audio_dim == 128 and cfg.width == 384 and PRESETS["small"].audio_dim == 256
    assert DiTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown DiTConfig fields"):
        DiTConfig.from_dict({**cfg.to_dict(), "colour": "red"})
    with pytest.raises(KeyError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ValueError, match="divisible"):
        DiTConfig(width=65, heads=4, depth=1)
    with pytest.raises(TypeError):
        DiTConfig(64, 4, 2)  # keyword-only


# ---------------------------------------------------------------- network

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


# ---------------------------------------------------------------- flow matching

def test_interpolate_target_and_masked_loss():
    fm, g = FlowMatching(), torch.Generator().manual_seed(0)
    x1 = torch.randn(4, 6, 3, generator=g)
    x0 = fm.sample_x0(x1, g)
    t = fm.sample_t(4, g)
    assert t.shape == (4,) and ((t >= 0) & (t < 1)).all()
    torch.testing.assert_close(fm.interpolate(x0, x1, torch.zeros(4)), x0)
    torch.testing.assert_close(fm.interpolate(x0, x1, torch.ones(4)), x1)
    x_t = fm.interpolate(x0, x1, t)
    torch.testing.assert_close(x_t + (1 - t)[:, None, None] * fm.target(x0, x1), x1)

    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 2:] = False
    mask[3] = False
    pred = torch.zeros_like(x1)
    target = torch.ones_like(x1)
    target[1, 2:] = 1000.0                                     # padded frames: ignored
    loss = fm.loss(pred, target, mask)
    assert loss.shape == (4,)
    torch.testing.assert_close(loss, torch.tensor([1.0, 1.0, 1.0, 0.0]))
    target[1, 0, 0] = 3.0                                      # one of 2 * 3 valid elements: (9 + 5) / 6
    assert fm.loss(pred, target, mask)[1].item() == pytest.approx(14 / 6)


def test_ode_solvers_on_known_fields():
    fm = FlowMatching()
    x0 = torch.randn(2, 5, 3)
    a, b = torch.randn(1, 5, 3), torch.randn(1, 5, 3)
    constant = lambda x, t: a.expand_as(x)
    linear_in_t = lambda x, t: a + b * t[:, None, None]        # exact solution: x0 + a + b / 2
    for method in ("euler", "heun"):
        torch.testing.assert_close(fm.sample(constant, x0, steps=7, method=method), x0 + a)
    torch.testing.assert_close(fm.sample(linear_in_t, x0, steps=4, method="heun"), x0 + a + b / 2)
    euler = fm.sample(linear_in_t, x0, steps=4, method="euler")  # first order: off by b / (2 * steps)
    torch.testing.assert_close(euler, x0 + a + b / 2 - b / 8)
    with pytest.raises(ValueError, match="unknown method"):
        fm.sample(constant, x0, steps=2, method="rk4")


def test_condition_dropout_is_seeded_and_masks_only():
    B = 1000
    cond = {"phones_track": torch.randint(1, 9, (B, 6)), "video": torch.randn(B, 3, 4),
            "video_mask": torch.ones(B, 3, dtype=torch.bool), "audio_mask": torch.ones(B, 6, dtype=torch.bool)}
    drop = lambda **p: drop_conditions(cond, generator=torch.Generator().manual_seed(3), **p)
    dropped = drop(p_all=0.1)
    no_video = ~dropped["video_mask"].any(1)
    no_text = (dropped["phones_track"] == 0).all(1)
    assert torch.equal(no_video, no_text) and 60 < no_video.sum() < 140
    assert torch.equal(dropped["video"], cond["video"]) and cond["video_mask"].all()  # masked, not faked or mutated
    for key in ("video_mask", "phones_track"):
        assert torch.equal(drop(p_all=0.1)[key], dropped[key])  # same seed, same drops

    only_video = drop(p_all=0.0, p_video=1.0)
    assert not only_video["video_mask"].any() and torch.equal(only_video["phones_track"], cond["phones_track"])
    only_text = drop(p_all=0.0, p_text=1.0)
    assert only_text["video_mask"].all() and (only_text["phones_track"] == 0).all()
    independent = drop(p_all=0.0, p_video=0.5, p_text=0.5)
    assert not torch.equal(~independent["video_mask"].any(1), (independent["phones_track"] == 0).all(1))
    with pytest.raises(ValueError, match="p_all"):
        drop(p_all=1.5)


def test_classifier_free_guidance_combines_cond_and_uncond():
    model, batch = tiny_model(randomize_output=True), mixed_batch()
    inputs = model_inputs(batch)
    x, t = inputs.pop("x_t"), inputs.pop("t")
    uncond = null_conditions(inputs)
    assert not uncond["video_mask"].any() and (uncond["phones_track"] == 0).all()
    v_c, v_u = model(x, t, **inputs), model(x, t, **uncond)
    guided = guided_velocity(model, x, t, inputs, uncond, scale=3.0)
    torch.testing.assert_close(guided, v_u + 3.0 * (v_c - v_u), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(guided_velocity(model, x, t, inputs, uncond, scale=1.0), v_c)
    torch.testing.assert_close(cfg_velocity_fn(model, inputs)(x, t), guided)
    out = FlowMatching().sample(cfg_velocity_fn(model, inputs), torch.randn_like(x), steps=3, method="heun")
    assert out.shape == x.shape and torch.isfinite(out).all()


# ---------------------------------------------------------------- batch

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


# ---------------------------------------------------------------- learning

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
