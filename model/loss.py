"""The loss as trained: one batch's per-sample flow-matching loss with its conditions dropped and masked for
classifier-free guidance, and the validation loss with every condition kept.

Every random draw (flow time, noise, condition dropout, per-frame video masking) comes from the generator passed in:
the loop re-seeds it from (seed, rank, step) every step, the validation loss from the run's seed alone, so two evals
of the same weights give the same number.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from model.batch import conditions
from model.data import seed_of
from model.flow import FlowMatching, drop_conditions, without_streams
from model.train_config import TrainConfig


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors on `device`, those in dicts too (streams); its lists, e.g. task and key, as they are."""
    def move(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: move(x) for k, x in v.items()}
        return v.to(device, non_blocking=True) if torch.is_tensor(v) else v

    return {k: move(v) for k, v in batch.items()}


def flow_loss(model: torch.nn.Module, batch: dict[str, Any], generator: torch.Generator, cfg: TrainConfig,
              autocast: bool, train: bool = True) -> torch.Tensor:
    """Per-sample masked flow-matching loss [B]; with train=True the conditions are dropped / masked for CFG:
    video frames masked one by one (video_frame_mask_p), the temporal streams of the whole batch masked
    (stream_batch_mask_p, one draw per batch, always taken), then the per-sample, per-group dropout."""
    flow = FlowMatching()
    x1, cond = batch["x1"], conditions(batch)
    if train:
        if cfg.video_frame_mask_p > 0:
            keep = torch.rand(cond["video_mask"].shape, generator=generator, device=generator.device)
            cond["video_mask"] = cond["video_mask"] & (keep >= cfg.video_frame_mask_p).to(x1.device)
        mask_streams = float(torch.rand(1, generator=generator, device=generator.device)) < cfg.stream_batch_mask_p
        if mask_streams and cond.get("stream_masks"):
            cond = without_streams(cond)
        cond = drop_conditions(cond, generator=generator, p_all=cfg.p_drop_all, p_video=cfg.p_drop_video,
                               p_text=cfg.p_drop_text, p_streams=cfg.p_drop_streams, p_speaker=cfg.p_drop_speaker)
    t = flow.sample_t(x1.shape[0], generator).to(x1.device)                            # [B]
    x0 = flow.sample_x0(x1, generator)                                                  # [B, T, A]
    with torch.autocast(x1.device.type, dtype=torch.bfloat16, enabled=autocast):
        velocity = model(flow.interpolate(x0, x1, t), t, **cond)                       # [B, T, A]
    return flow.loss(velocity, flow.target(x0, x1), batch["audio_mask"])              # [B]


@torch.no_grad()
def validation_loss(model: torch.nn.Module, batches: Sequence[dict[str, Any]], cfg: TrainConfig,
                    device: torch.device, autocast: bool, repeats: int = 4) -> Optional[float]:
    """Mean loss over the held-out batches with all conditions kept; the same noise and times at every eval."""
    if not batches:
        return None
    was_training = model.training
    model.eval()
    generator = torch.Generator(device).manual_seed(seed_of(cfg.seed, 0xE7A1))
    total = count = 0.0
    for _ in range(repeats):
        for batch in batches:
            losses = flow_loss(model, to_device(batch, device), generator, cfg, autocast, train=False)
            total, count = total + float(losses.sum()), count + len(losses)
    model.train(was_training)
    return total / count
