"""The exponential moving average (EMA) of the weights, with a decay that warms up.

A plain EMA of decay d starts from the initial weights and still holds d^n of them after n updates: with d = 0.999,
67% after 400 steps, so a short run's EMA is mostly its random initialisation. As in TensorFlow's
`tf.train.ExponentialMovingAverage(decay, num_updates)` and the default schedule of diffusers' `EMAModel`
(`get_decay`), the decay of an update grows with the count n of the updates before it:

    decay_n = min(decay, (1 + n) / (10 + n))

so the first updates nearly copy the weights (0.1, 0.18, 0.25, ...), and `decay` itself is reached after about
9 / (1 - decay) updates (890 for 0.99, 8,990 for 0.999). From then on the average spans about 1 / (1 - decay) steps.

`ema_span` says what an EMA averages in terms a person can use: the decay of its last update, how many of the last
steps hold 90% of its weight, the mean age of what it holds (in steps) and the share the initial weights still have.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch


def decay_at(updates: int, decay: float) -> float:
    """The decay of the EMA update that follows `updates` earlier ones: min(decay, (1 + n) / (10 + n))."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class EMA:
    """An averaged copy of a network (`module`), updated after every optimiser step with the warmed-up decay."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> float:
        """Average in the current weights of `model` (the plain network); returns the decay used."""
        d = decay_at(self.updates, self.decay)
        torch._foreach_lerp_(list(self.module.parameters()), list(model.parameters()), 1.0 - d)  # d*ema + (1-d)*w
        for mine, theirs in zip(self.module.buffers(), model.buffers()):
            mine.copy_(theirs)
        self.updates += 1
        return d

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])

    def span(self) -> dict[str, Any]:
        return ema_span(self.updates, self.decay)


def ema_span(updates: int, decay: float) -> dict[str, Any]:
    """What an EMA of `updates` updates with the warmed-up `decay` holds, as plain numbers:
    decay, updates, last_decay (of the last update), steps_for_90pct (the last steps that hold 90% of the weight;
    None while the initial weights hold more than 10%), mean_age_steps, initial_share."""
    if updates <= 0:
        return {"decay": decay, "updates": 0, "last_decay": None, "steps_for_90pct": None, "mean_age_steps": 0.0,
                "initial_share": 1.0}
    n = np.arange(updates, dtype=np.float64)
    d = np.minimum(decay, (1.0 + n) / (10.0 + n))                       # [updates], the decay of each update
    kept = np.exp(np.cumsum(np.log(d)[::-1])[::-1])                     # kept[k] = prod_{j >= k} d_j
    weight = (1.0 - d) * np.append(kept[1:], 1.0)                       # share of the weights after update k
    initial = float(kept[0])
    age = (updates - 1) - n                                             # in steps: the last update is age 0
    newest_first = np.cumsum(weight[::-1])
    reach = int(np.searchsorted(newest_first, 0.9)) + 1
    return {"decay": decay, "updates": int(updates), "last_decay": float(d[-1]),
            "steps_for_90pct": reach if reach <= updates else None,
            "mean_age_steps": float((weight * age).sum() + initial * updates), "initial_share": initial}


def describe_span(span: dict[str, Any]) -> str:
    """One line: what the EMA averages."""
    if not span["updates"]:
        return "EMA of no update yet: the initial weights"
    if span["steps_for_90pct"] is None:
        held = f"still {100 * span['initial_share']:.0f}% the initial weights"
    else:
        held = f"90% of its weight from the last {span['steps_for_90pct']} steps"
    return (f"EMA over {span['updates']} steps: {held}, mean age {span['mean_age_steps']:.0f} steps "
            f"(decay {span['last_decay']:.4g} at the last step, {span['decay']:g} at most)")
