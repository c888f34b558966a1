"""Adaptive ODE integration for sampling: dopri5 (Dormand-Prince 5(4), torchdiffeq's `odeint`).

Integrates dx/dt = v(x, t) from t = 0 (noise) to t = 1 (audio), choosing the step sizes so that the local error
estimate stays under atol + rtol * |x| (an RMS norm over the whole tensor). The tolerances default to the
reference's: the VSSFlow authors sample with flow_matching's `ODESolver.sample(method="dopri5", atol=1e-5,
rtol=1e-5, step_size=None)`, which calls torchdiffeq's odeint (vasflow1/vssflow at c172450: infer.py lines 445-455,
and `solver.sample(...)` in every worker/vaflow_*.py). Their `time_grid = linspace(0, 1, sample_steps + 1)` only
chooses where the solution is reported, not the steps taken; here only t = 1 is asked for.

Every evaluation is at 0 <= t <= 1 (the last step is made to end on t = 1; see `dopri5`; the reference does not
do this, so its samples use the network evaluated past t = 1) except, for a field more than 100 times weaker than
its state, torchdiffeq's initial step-size probe f(x0 + h0 f0, h0) with h0 = 0.01 |x0| / |f0|: it only sets the
first step's size. The step size is shared by the batch: every sample takes the same steps, chosen by the error of
all of them together, so a sample's result can differ (within the tolerance) with the batch it is sampled in.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from manifests.errors import PipelineError

VelocityFn = Callable[[Tensor, Tensor], Tensor]   # (x [B, T, A], t [B]) -> velocity [B, T, A]

DOPRI5_RTOL = 1e-5
DOPRI5_ATOL = 1e-5
MAX_NFE = 5000   # a field the solver cannot follow (a step-size collapse) stops here instead of running for hours


class SolverError(PipelineError, RuntimeError):
    """The adaptive solver could not integrate the field (non-finite velocity, step-size underflow, budget spent)."""


class _CountedField:
    """torchdiffeq's f(t, x) around our velocity_fn(x, t [B]): counts evaluations and accepted / rejected steps.

    torchdiffeq passes t as a 0-d tensor (cast to x's dtype); our velocity functions take one t per sample.
    The callback_* methods are torchdiffeq's step hooks (looked up by name on the function it is given).
    """

    def __init__(self, velocity_fn: VelocityFn, batch: int, max_nfe: int):
        self.velocity_fn, self.batch, self.max_nfe = velocity_fn, batch, max_nfe
        self.nfe = self.accepted = self.rejected = 0

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        if self.nfe >= self.max_nfe:
            raise SolverError(f"dopri5 spent its budget of {self.max_nfe} velocity evaluations at t = {float(t):.6g} "
                              f"({self.accepted} steps accepted, {self.rejected} rejected); loosen rtol/atol or use "
                              f"a fixed-step method")
        self.nfe += 1
        v = self.velocity_fn(x, t.reshape(1).repeat(self.batch))   # t: [] -> [B]
        if not torch.isfinite(v).all():
            raise SolverError(f"the velocity field returned NaN or Inf at t = {float(t):.6g} (evaluation {self.nfe})")
        return v

    def callback_accept_step(self, t0: Tensor, x0: Tensor, dt: Tensor) -> None:
        self.accepted += 1

    def callback_reject_step(self, t0: Tensor, x0: Tensor, dt: Tensor) -> None:
        self.rejected += 1


def dopri5(velocity_fn: VelocityFn, x0: Tensor, *, rtol: float = DOPRI5_RTOL, atol: float = DOPRI5_ATOL,
           max_nfe: int = MAX_NFE) -> tuple[Tensor, dict[str, Any]]:
    """x at t = 1 for dx/dt = velocity_fn(x, t), x(0) = x0 [B, ...], and what the solve cost:
    {"method": "dopri5", "nfe": velocity evaluations, "steps": accepted steps, "rejected": rejected steps,
    "rtol", "atol"}. Each step attempt costs 6 evaluations (7 stages, the first reused from the last step) and the
    start 2 (f(x0) and the initial step-size probe): nfe = 2 + 6 * (steps + rejected).
    """
    from torchdiffeq import odeint

    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
    field = _CountedField(velocity_fn, x0.shape[0], max_nfe)
    t = torch.tensor([0.0, 1.0], dtype=x0.dtype, device=x0.device)
    try:
        # step_t: the last step ends on t = 1 exactly. Without it torchdiffeq steps past 1 and interpolates back,
        # and that interpolation uses velocities evaluated at t > 1, where the network was never trained.
        x1 = odeint(field, x0, t, method="dopri5", rtol=rtol, atol=atol, options={"step_t": t[1:]})[-1]
    except AssertionError as e:   # torchdiffeq signals underflow in dt and non-finite states by assert
        raise SolverError(f"dopri5 failed after {field.nfe} evaluations ({field.accepted} steps accepted): "
                          f"{e}") from None
    stats = {"method": "dopri5", "nfe": field.nfe, "steps": field.accepted, "rejected": field.rejected,
             "rtol": rtol, "atol": atol}
    return x1, stats
