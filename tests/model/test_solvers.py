"""The ODE solvers for sampling: adaptive dopri5 (model/solvers.py) against Euler and Heun on fields whose exact
solution is known, the cost each reports, and dopri5 through generate's sampler with a tiny random network."""

from __future__ import annotations

import math

import pytest
import torch

from model.flow import FlowMatching
from model.generate import GenerateError, sample_audio
from model.solvers import SolverError, dopri5
from tests.model.helpers import mixed_batch, tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

K, W = 20.0, 2 * math.pi   # the relaxation field: x relaxes at rate K towards a target moving as sin(W t)


def relax(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v = -K (x - sin(W t)): stiff-ish (Euler is unstable for steps > 2 / K) with a moving target."""
    return -K * (x - torch.sin(W * t)[:, None, None])


def relax_exact(x0: torch.Tensor) -> torch.Tensor:
    """x(1) for relax: e^{-K} (x0 - B) + A sin(W) + B cos(W), the particular solution A sin(W t) + B cos(W t)."""
    a, b = K * K / (K * K + W * W), -K * W / (K * K + W * W)
    return math.exp(-K) * (x0 - b) + a * math.sin(W) + b * math.cos(W)


def counted(fn):
    """fn, counting its calls and keeping the t it was given."""
    def wrapped(x, t):
        wrapped.calls += 1
        wrapped.ts.append(t)
        return fn(x, t)
    wrapped.calls, wrapped.ts = 0, []
    return wrapped


def error(x: torch.Tensor, exact: torch.Tensor) -> float:
    return (x - exact).abs().max().item()


def test_dopri5_is_exact_on_a_field_linear_in_t_with_few_evaluations():
    fm, x0 = FlowMatching(), torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    a, b = torch.randn(1, 5, 3), torch.randn(1, 5, 3)
    for name, field, exact in (("constant", lambda x, t: a.expand_as(x), x0 + a),
                               ("a + b t", lambda x, t: a + b * t[:, None, None], x0 + a + b / 2)):
        field, stats = counted(field), {}
        x = fm.sample(field, x0, steps=1000, method="dopri5", stats=stats)   # steps is ignored by dopri5
        torch.testing.assert_close(x, exact, msg=name)
        assert stats["method"] == "dopri5" and stats["nfe"] == field.calls, name
        assert stats["nfe"] <= 26 and stats["steps"] <= 4, (name, stats)     # a 5th-order method: a few steps
        assert stats["nfe"] == 2 + 6 * (stats["steps"] + stats["rejected"])  # FSAL: 6 new stages per attempt
        assert all(t.shape == (2,) and t.dtype == x0.dtype and (t == t[0]).all() for t in field.ts)
        assert 0.0 <= min(t[0].item() for t in field.ts) and max(t[0].item() for t in field.ts) <= 1.0


def test_dopri5_beats_euler_on_a_stiff_field_for_the_same_error():
    fm = FlowMatching()
    x0 = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = relax_exact(x0)
    costs = {}
    for tol in (1e-3, 1e-5, 1e-7):
        x, costs[tol] = dopri5(relax, x0, rtol=tol, atol=tol)
        assert error(x, exact) < 10 * tol, (tol, costs[tol])                 # reaches the exact solution to tol
    assert costs[1e-3]["nfe"] < costs[1e-5]["nfe"] < costs[1e-7]["nfe"]      # tighter tolerance, more work

    x, cost = dopri5(relax, x0)   # the reference's tolerances
    dopri_error = error(x, exact)
    assert dopri_error < 1e-5 and cost["rtol"] == cost["atol"] == 1e-5
    euler_errors = {}
    for steps in (100, 200, 400, 10 * cost["nfe"]):
        stats = {}
        euler_errors[steps] = error(fm.sample(relax, x0, steps, method="euler", stats=stats), exact)
        assert stats == {"method": "euler", "nfe": steps, "steps": steps}
    # first order: doubling the steps halves the error
    assert 1.8 < euler_errors[100] / euler_errors[200] < 2.2 and 1.8 < euler_errors[200] / euler_errors[400] < 2.2
    # ten times dopri5's evaluations still leave Euler ten times further from the solution (about 40 times: at
    # first order, Euler would need some 400 times dopri5's evaluations for its error)
    assert euler_errors[10 * cost["nfe"]] > 10 * dopri_error, (euler_errors, dopri_error, cost)


def test_fixed_step_methods_report_their_true_cost_and_unknown_methods_name_the_known_ones():
    fm, x0 = FlowMatching(), torch.randn(2, 3, 1, dtype=torch.float64)
    for method, per_step in (("euler", 1), ("heun", 2)):
        field, stats = counted(relax), {}
        fm.sample(field, x0, 30, method=method, stats=stats)
        assert stats == {"method": method, "nfe": per_step * 30, "steps": 30} and field.calls == per_step * 30
    heun = error(fm.sample(relax, x0, 100, method="heun"), relax_exact(x0))
    assert heun < error(fm.sample(relax, x0, 100, method="euler"), relax_exact(x0)) / 10
    with pytest.raises(ValueError, match="unknown method 'rk4'; use one of euler, heun, dopri5"):
        fm.sample(relax, x0, 10, method="rk4")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        fm.sample(relax, x0, 0, method="euler")


def test_dopri5_refuses_a_field_it_cannot_follow():
    x0 = torch.zeros(1, 2, 2)
    nan_after = counted(lambda x, t: torch.full_like(x, float("nan")) if t[0] > 0.5 else torch.ones_like(x))
    with pytest.raises(SolverError, match="NaN or Inf at t = "):
        dopri5(nan_after, x0)
    with pytest.raises(SolverError, match="budget of 50 velocity evaluations"):
        dopri5(relax, x0.double(), rtol=1e-12, atol=1e-12, max_nfe=50)
    with pytest.raises(ValueError, match="rtol and atol must be > 0"):
        dopri5(relax, x0, rtol=0.0)


def test_dopri5_through_sample_audio_with_a_tiny_random_network():
    model = tiny_model(seed=2, randomize_output=True)   # model.config.preset("tiny", ...), random weights
    batch = mixed_batch()
    cond = {k: batch[k] for k in ("phones_track", "video", "video_mask", "audio_mask")}
    stats = {}
    audio = sample_audio(model, cond, method="dopri5", guidance=2.0, seed=4, stats=stats)
    assert audio.shape == batch["x1"].shape and torch.isfinite(audio).all()
    assert stats["method"] == "dopri5" and stats["nfe"] == 2 + 6 * (stats["steps"] + stats["rejected"])
    # the same ODE solved finely (a random network's field changes fast with t: Heun 400 is good to ~1e-2 here)
    fine = sample_audio(model, cond, steps=400, method="heun", guidance=2.0, seed=4)
    euler = sample_audio(model, cond, steps=25, method="euler", guidance=2.0, seed=4)
    assert error(audio, fine) < error(euler, fine) / 10, (error(audio, fine), error(euler, fine))
    with pytest.raises(GenerateError, match="dopri5"):
        sample_audio(model, cond, method="rk45")
