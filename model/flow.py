"""Conditional flow matching (rectified flow): the objective, the ODE sampler and classifier-free guidance.

x_t = t * x1 + (1 - t) * x0 with x0 ~ N(0, I), t ~ U(0, 1); the network regresses the velocity x1 - x0, and sampling
integrates dx/dt = v(x, t) from t = 0 (noise) to t = 1 (audio). The network is not part of this file: everything
here takes a velocity function or a model and the conditioning as the keyword arguments of its forward.

A condition dict `cond` holds the model's keyword arguments besides x_t and t: phones_track [B, T], video [B, Tv, Dv],
video_mask [B, Tv], audio_mask [B, T], and optionally ref [B, R] / ref_mask [B] (the speaker) and streams
{name: [B, T, ...]} / stream_masks {name: [B, T]} (the temporal streams). Dropping a condition masks it (video_mask
all False, phones all zero, stream masks False, ref_mask False); nothing is replaced by fake data.

All randomness comes from one torch.Generator passed in by the caller; draws happen on the generator's device.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
from torch import Tensor, nn

from model.solvers import DOPRI5_ATOL, DOPRI5_RTOL, VelocityFn, dopri5

Method = Literal["euler", "heun", "dopri5"]
METHODS: tuple[str, ...] = ("euler", "heun", "dopri5")
Cond = dict[str, Tensor | dict[str, Tensor] | None]

DEFAULT_GUIDANCE_SCALE = 3.0


class FlowMatching:
    def sample_t(self, batch: int, generator: torch.Generator) -> Tensor:
        """t ~ U(0, 1), [B] float32 on the generator's device."""
        return torch.rand(batch, generator=generator, device=generator.device)

    def sample_x0(self, x1: Tensor, generator: torch.Generator) -> Tensor:
        """Gaussian noise shaped like x1 [B, T, A] (drawn on the generator's device, returned on x1's)."""
        noise = torch.randn(x1.shape, generator=generator, device=generator.device)
        return noise.to(device=x1.device, dtype=x1.dtype)

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """x_t = t * x1 + (1 - t) * x0 for t [B] and x0, x1 [B, T, A]."""
        t = t.to(device=x1.device, dtype=x1.dtype).view(-1, *([1] * (x1.dim() - 1)))  # [B, 1, 1]
        return t * x1 + (1 - t) * x0

    def target(self, x0: Tensor, x1: Tensor) -> Tensor:
        """The velocity of the straight path from x0 to x1."""
        return x1 - x0

    def loss(self, pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Per-sample MSE [B] (float32) over the valid frames (mask [B, T] bool) and all channels.

        A sample with no valid frame has loss 0 (it contributes no gradient).
        """
        se = (pred.float() - target.float()).square() * mask[..., None].float()  # [B, T, A]
        n_valid = mask.float().sum(dim=1) * pred.shape[-1]                        # [B]
        return se.sum(dim=(1, 2)) / n_valid.clamp_min(1.0)

    @torch.no_grad()
    def sample(self, velocity_fn: VelocityFn, x0: Tensor, steps: int, method: Method = "euler",
               stats: dict | None = None, *, rtol: float = DOPRI5_RTOL, atol: float = DOPRI5_ATOL) -> Tensor:
        """Integrate dx/dt = velocity_fn(x, t) from t = 0 to 1; returns x at t = 1.

        Euler and Heun (explicit trapezoid) take `steps` equal steps: `steps` and 2 * `steps` evaluations. dopri5
        chooses its own steps to keep the error under rtol/atol (model/solvers.py) and ignores `steps`; rtol/atol
        are used by dopri5 alone. A `stats` dict is filled with what the solve cost: {"method", "nfe" (velocity
        evaluations), "steps" (steps taken)}, plus dopri5's rejected steps and tolerances.
        """
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
        if method == "dopri5":
            x, cost = dopri5(velocity_fn, x0, rtol=rtol, atol=atol)
            if stats is not None:
                stats.update(cost)
            return x
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        x, batch, dt = x0, x0.shape[0], 1.0 / steps
        for i in range(steps):
            t0 = torch.full((batch,), i * dt, device=x0.device)
            v0 = velocity_fn(x, t0)
            if method == "euler":
                x = x + dt * v0
            else:
                t1 = torch.full((batch,), (i + 1) * dt, device=x0.device)
                v1 = velocity_fn(x + dt * v0, t1)
                x = x + 0.5 * dt * (v0 + v1)
        if stats is not None:
            stats.update(method=method, nfe=steps if method == "euler" else 2 * steps, steps=steps)
        return x


def null_conditions(cond: Cond) -> Cond:
    """The unconditional version of `cond`: every condition dropped (video, text, temporal streams, speaker)."""
    out = dict(cond)
    if cond.get("video_mask") is not None:
        out["video_mask"] = torch.zeros_like(cond["video_mask"], dtype=torch.bool)
    if cond.get("phones_track") is not None:
        out["phones_track"] = torch.zeros_like(cond["phones_track"])
    if cond.get("stream_masks") is not None:
        out["stream_masks"] = {k: torch.zeros_like(m, dtype=torch.bool) for k, m in cond["stream_masks"].items()}
    if cond.get("ref_mask") is not None or cond.get("ref") is not None:
        like = cond["ref"] if cond.get("ref") is not None else cond["ref_mask"]
        out["ref_mask"] = torch.zeros(like.shape[0], dtype=torch.bool, device=like.device)
    return out


def without_streams(cond: Cond, names: Optional[Sequence[str]] = None) -> Cond:
    """`cond` with the temporal streams `names` (default: all) masked for every sample (e.g. generating with the lip
    stream ablated)."""
    masks = cond.get("stream_masks") or {}
    return {**cond, "stream_masks": {k: torch.zeros_like(m) if names is None or k in names else m
                                     for k, m in masks.items()}}


DROP_GROUPS = ("all", "video", "text", "streams", "speaker")   # one uniform draw of [B] each, in this order


def drop_conditions(cond: Cond, *, generator: torch.Generator, p_all: float = 0.1, p_video: float = 0.0,
                    p_text: float = 0.0, p_streams: float = 0.0, p_speaker: float = 0.0) -> Cond:
    """Classifier-free-guidance dropout, per sample and per condition group: every condition together with p_all,
    and the CLIP video, the text, the temporal streams (lip, sync together) and the speaker token each
    independently with its own probability. Returns a new dict.

    One uniform draw of [B] per group (DROP_GROUPS) is always taken, whatever the probabilities and whatever
    conditions the batch has, so the generator's stream does not depend on the configuration.
    """
    probabilities = {"all": p_all, "video": p_video, "text": p_text, "streams": p_streams, "speaker": p_speaker}
    for name, p in probabilities.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p_{name} must be in [0, 1], got {p}")
    batch = cond["audio_mask"].shape[0]
    device = cond["audio_mask"].device
    u = torch.rand(len(DROP_GROUPS), batch, generator=generator, device=generator.device).to(device)  # [5, B]
    drop = {g: u[i] < probabilities[g] for i, g in enumerate(DROP_GROUPS)}
    drop = {g: d | drop["all"] for g, d in drop.items()}                                 # [B] each

    out = dict(cond)
    if cond.get("video_mask") is not None:
        out["video_mask"] = cond["video_mask"].bool() & ~drop["video"][:, None]
    if cond.get("phones_track") is not None:
        out["phones_track"] = cond["phones_track"].masked_fill(drop["text"][:, None], 0)
    if cond.get("stream_masks") is not None:
        out["stream_masks"] = {k: m.bool() & ~drop["streams"][:, None] for k, m in cond["stream_masks"].items()}
    if cond.get("ref") is not None:
        ref_mask = cond.get("ref_mask")
        keep = torch.ones(batch, dtype=torch.bool, device=device) if ref_mask is None else ref_mask.bool()
        out["ref_mask"] = keep & ~drop["speaker"]
    return out


def _with_ref_mask(cond: Cond) -> Cond:
    """cond with an explicit ref_mask (all True) wherever a ref is given without one."""
    if cond.get("ref") is not None and cond.get("ref_mask") is None:
        return {**cond, "ref_mask": torch.ones(cond["ref"].shape[0], dtype=torch.bool, device=cond["ref"].device)}
    return cond


def _cat_conditions(a: Cond, b: Cond) -> Cond:
    a, b = _with_ref_mask(a), _with_ref_mask(b)
    if a.keys() != b.keys():
        raise ValueError(f"cond and uncond have different keys: {sorted(a)} vs {sorted(b)}")
    out: Cond = {}
    for key in a:
        if (a[key] is None) != (b[key] is None):
            raise ValueError(f"condition {key!r} is None in only one of cond / uncond")
        if isinstance(a[key], dict):          # streams, stream_masks: {name: [B, T, ...]}
            out[key] = {name: torch.cat([a[key][name], b[key][name]], dim=0) for name in a[key]}
        else:
            out[key] = None if a[key] is None else torch.cat([a[key], b[key]], dim=0)
    return out


def guided_velocity(model: nn.Module, x: Tensor, t: Tensor, cond: Cond, uncond: Cond,
                    scale: float = DEFAULT_GUIDANCE_SCALE) -> Tensor:
    """Classifier-free guidance: v_uncond + scale * (v_cond - v_uncond), in one batched forward of size 2B."""
    if scale == 1.0:
        return model(x, t, **cond)
    v = model(torch.cat([x, x]), torch.cat([t, t]), **_cat_conditions(cond, uncond))  # [2B, T, A]
    v_cond, v_uncond = v.chunk(2, dim=0)                                              # [B, T, A] each
    return v_uncond + scale * (v_cond - v_uncond)


def cfg_velocity_fn(model: nn.Module, cond: Cond, uncond: Cond | None = None,
                    scale: float = DEFAULT_GUIDANCE_SCALE) -> VelocityFn:
    """A velocity function for FlowMatching.sample; uncond defaults to every condition dropped."""
    uncond = null_conditions(cond) if uncond is None else uncond
    return lambda x, t: guided_velocity(model, x, t, cond, uncond, scale)
