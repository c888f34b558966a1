"""The flow-matching objective: interpolation, masked loss, ODE solvers, condition dropout, guidance."""

from __future__ import annotations

import pytest
import torch

from model.flow import FlowMatching, cfg_velocity_fn, drop_conditions, guided_velocity, null_conditions
from tests.model.helpers import mixed_batch, model_inputs, tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
