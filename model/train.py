"""The training loop: joint pretraining and joint fine-tuning of VSSFlow by conditional flow matching.

Straight-line code in the nanoGPT / MMAudio manner: one device chosen at the top; a learning rate that is a pure
function of the step (linear warm-up, then constant); AdamW with gradient clipping; optional EMA
(`torch.optim.swa_utils.AveragedModel`); bf16 autocast on CUDA only. Per step, one torch.Generator, re-seeded from
(seed, rank, step), draws the flow time, the noise and the classifier-free-guidance dropout (and the per-frame video
masking of fine-tuning): the draws of step s do not depend on how the run got to step s, so a resumed run repeats an
uninterrupted one exactly (on CPU, with `deterministic`), given the data stream's own resume (model/data.py).

A run lives in one folder RUN:
  RUN/ckpt/last.pt        the latest checkpoint, written atomically (temporary file, fsync, rename); a run started
                          on a RUN that has one resumes from it
  RUN/tensorboard/        TensorBoard events of the same scalars
  RUN/metrics.jsonl       one JSON line per log / eval: step, loss (and per task), lr, grad norm, steps/s, samples/s,
                          share of step time spent waiting for data, validation loss. (TensorBoard is not a
                          dependency of this project; the lines are easy to plot.) A resumed run first drops lines
                          past its checkpoint's step.
  RUN/report.json         the summary of the last finished invocation
  RUN/workers/rank-N.json what each training process did (steps, samples, checkpoints written, device)

A checkpoint holds only tensors and plain types (`torch.load(..., weights_only=True)`): the plain model's weights,
the optimiser, EMA, step, RNG states (torch, CUDA, numpy, python, the generator), the data position, the resolved
TrainConfig and DiTConfig, the audio normalisation, and the feature contract of the training data (so `generate`
can extract conditions exactly as the data was extracted).

Several processes: when torch.distributed is initialised (e.g. by Ray Train's TorchTrainer, see
pipeline/cli_train.py), the model is wrapped in DistributedDataParallel, each rank reads its own seeded stream, and
rank 0 alone validates and writes checkpoints and metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from model.config import DiTConfig, preset
from model.data import (
    AUDIO_REPRS,
    DataError,
    SamplePrep,
    TrainData,
    TrainLoader,
    contract_differences,
    describe_sources,
    estimate_audio_norm,
    fixed_batches,
    load_samples,
    plan_finetune,
    plan_pretrain,
    seed_of,
)
from model.dit import VSSFlowDiT, count_parameters
from model.flow import FlowMatching, drop_conditions
from stages.format.contract import ContractError, FeatureContract

CHECKPOINT_FORMAT = 1
LAST = "ckpt/last.pt"
# fields a resumed run may change; any other difference from the checkpoint's config is refused
RESUMABLE_CHANGES = frozenset({"steps", "eval_every", "save_every", "log_every", "num_workers", "device",
                               "num_threads", "bf16"})

Progress = Callable[[dict[str, Any]], None]


class TrainError(ValueError):
    """A run that cannot start or resume as asked (clear message, no traceback needed)."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # model
    preset: str = "base"
    model_overrides: dict = field(default_factory=dict)    # DiTConfig fields, e.g. {"max_video_frames": 50}
    audio_repr: str = "mel"                                 # "mel" (patched 4x64) or "latent" (VAE posterior)
    latent_sample: bool = True                              # latent: sample the posterior (False: its mean)
    audio_mean: Optional[float] = None                      # standardisation; None: estimated from the data
    audio_std: Optional[float] = None
    norm_samples: int = 256                                 # samples read to estimate it
    # optimisation
    batch_size: int = 36
    steps: int = 100_000
    lr: float = 1e-4
    warmup_steps: int = 2000                                # linear warm-up, then constant
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    grad_clip: float = 1.0
    ema_decay: Optional[float] = 0.999                      # None: no EMA
    # conditioning dropout (classifier-free guidance) and masking
    p_drop_all: float = 0.1
    p_drop_video: float = 0.0
    p_drop_text: float = 0.0
    video_frame_mask_p: float = 0.0                         # mask each video frame independently (fine-tuning)
    # data
    task_weights: Optional[dict] = None                     # {"v2s": .., "visual_tts": .., "tts": .., "joint": ..}
    val_split: Optional[str] = "test"
    val_samples: int = 16
    num_workers: int = 2                                    # DataLoader workers per training process
    shuffle_buffer: int = 128                               # raw samples per source and loader worker
    epoch_steps: int = 1000                                 # batches per seeded data epoch (model/data.py)
    # bookkeeping
    log_every: int = 10
    eval_every: int = 1000
    save_every: int = 1000
    seed: int = 0
    # execution
    device: str = "auto"
    bf16: bool = True                                       # bf16 autocast, on CUDA only
    deterministic: bool = False                             # torch.use_deterministic_algorithms (CPU tests)
    num_threads: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        object.__setattr__(self, "model_overrides", dict(self.model_overrides or {}))
        if self.audio_repr not in AUDIO_REPRS:
            raise ValueError(f"audio_repr must be one of {AUDIO_REPRS}, got {self.audio_repr!r}")
        for name in ("batch_size", "log_every", "eval_every", "save_every", "epoch_steps", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0 or self.warmup_steps < 0 or self.num_workers < 0 or self.val_samples < 0:
            raise ValueError("steps, warmup_steps, num_workers and val_samples must be >= 0")
        for name in ("p_drop_all", "p_drop_video", "p_drop_text", "video_frame_mask_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if not self.lr > 0 or not self.grad_clip > 0:
            raise ValueError("lr and grad_clip must be > 0")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of update `step` (0-based): linear warm-up over warmup_steps, then constant."""
    if cfg.warmup_steps <= 0:
        return cfg.lr
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)


def model_config_for(cfg: TrainConfig, contract: FeatureContract) -> DiTConfig:
    """The preset sized to the data: audio channels, video dim, phoneme vocabulary, longest clip."""
    if cfg.audio_repr == "mel":
        audio_dim, audio_fps = 4 * contract.n_mels, contract.mel_fps / 4
    else:
        if not contract.latent:
            raise ContractError("audio_repr 'latent' needs shards with VAE latents; these have none")
        audio_dim, audio_fps = int(contract.latent["channels"]), float(contract.latent["fps"])
    sized = {"audio_dim": audio_dim, "audio_fps": audio_fps, "video_dim": contract.video_dim,
             "video_fps": contract.video_fps, "phone_vocab_size": contract.vocab_size,
             "max_video_frames": int(round(contract.max_seconds * contract.video_fps))}
    return preset(cfg.preset, **{**sized, **cfg.model_overrides})


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached": float(cached)},
            "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss},
            "generator": generator.get_state()}


def _set_rng_state(rng: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))
    generator.set_state(rng["generator"])


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """torch.save to a temporary file, fsync, rename: a checkpoint that exists is whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by this trainer (tensors and plain types only: weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path} is not a VSSFlow trainer checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def ema_weights(ckpt: dict[str, Any]) -> Optional[dict[str, torch.Tensor]]:
    """The EMA model's weights with plain parameter names, or None when the run kept no EMA."""
    if not ckpt.get("ema"):
        return None
    return {k[len("module."):]: v for k, v in ckpt["ema"].items() if k.startswith("module.")}


def _config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k)]


# ----------------------------------------------------------------------------------------------------------------------
# Metrics


class Metrics:
    """RUN/metrics.jsonl, append-only, and TensorBoard events in RUN/tensorboard; on resume, records past the
    resumed step are dropped first (TensorBoard's purge_step does the same for its events)."""

    def __init__(self, path: Path, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(f"{line}\n" for line in kept))
            os.replace(tmp, path)
        self._file = open(path, "a")
        self._tensorboard = SummaryWriter(log_dir=str(path.parent / "tensorboard"), purge_step=resume_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()
        step = record.get("step", 0)
        for key, value in record.items():
            values = value.items() if isinstance(value, dict) else [(None, value)]
            for sub, v in values:
                if key != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tensorboard.add_scalar(f"{key}/{sub}" if sub else key, v, step)

    def close(self) -> None:
        self._file.close()
        self._tensorboard.close()


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    path = Path(run) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


# ----------------------------------------------------------------------------------------------------------------------
# One step, and the validation loss


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def conditions(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {"phones_track": batch["phones_track"], "video": batch["video"], "video_mask": batch["video_mask"],
            "audio_mask": batch["audio_mask"]}


def flow_loss(model: torch.nn.Module, batch: dict[str, Any], generator: torch.Generator, cfg: TrainConfig,
              autocast: bool, train: bool = True) -> torch.Tensor:
    """Per-sample masked flow-matching loss [B]; with train=True the conditions are dropped / masked for CFG."""
    flow = FlowMatching()
    x1, cond = batch["x1"], conditions(batch)
    if train:
        if cfg.video_frame_mask_p > 0:
            keep = torch.rand(cond["video_mask"].shape, generator=generator, device=generator.device)
            cond["video_mask"] = cond["video_mask"] & (keep >= cfg.video_frame_mask_p).to(x1.device)
        cond = drop_conditions(cond, generator=generator, p_all=cfg.p_drop_all, p_video=cfg.p_drop_video,
                               p_text=cfg.p_drop_text)
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
            losses = flow_loss(model, _to(batch, device), generator, cfg, autocast, train=False)
            total, count = total + float(losses.sum()), count + len(losses)
    model.train(was_training)
    return total / count


# ----------------------------------------------------------------------------------------------------------------------
# The loop


@dataclass
class _Init:
    """Where a run's weights come from when RUN has no checkpoint (fine-tuning: the pretraining checkpoint)."""

    path: str
    ckpt: dict[str, Any]


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(data: TrainData, out: str | Path, cfg: TrainConfig, *, job: str, init: Optional[_Init] = None,
          progress: Optional[Progress] = None) -> dict[str, Any]:
    """Train (or resume) the run in `out` for cfg.steps steps in total; returns the summary (also RUN/report.json).
    torch's thread count and deterministic mode are set from cfg for the run and restored afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        torch.use_deterministic_algorithms(cfg.deterministic or deterministic)
        return _train(data, Path(out), cfg, job=job, init=init, progress=progress)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _resolve(data: TrainData, cfg: TrainConfig, out: Path, ckpt: Optional[dict], init: Optional[_Init]
             ) -> tuple[TrainConfig, DiTConfig]:
    """The run's resolved config and network: from its checkpoint (resume), the init checkpoint (fine-tuning), or
    the preset sized to the data with the audio normalisation estimated from it. Refuses mismatches."""
    source = ckpt or (init.ckpt if init else None)
    if source is None:
        if cfg.audio_mean is None or cfg.audio_std is None:
            mean, std = estimate_audio_norm(data, cfg.audio_repr, cfg.norm_samples)
            cfg = dataclasses.replace(cfg, audio_mean=cfg.audio_mean if cfg.audio_mean is not None else mean,
                                      audio_std=cfg.audio_std if cfg.audio_std is not None else std)
        return cfg, model_config_for(cfg, data.contract)
    where = out / LAST if ckpt else init.path
    if source["feature_hash"] != data.contract.feature_hash:
        diff = contract_differences(FeatureContract.from_dict(source["contract"]), data.contract)
        raise ContractError(f"{where} was trained on features that differ from {', '.join(data.dirs)}: "
                            f"{'; '.join(diff[:8])}")
    if source["config"]["audio_repr"] != cfg.audio_repr:
        raise TrainError(f"audio_repr {cfg.audio_repr!r} differs from {where}'s {source['config']['audio_repr']!r}")
    norm = source["audio_norm"]
    cfg = dataclasses.replace(cfg, audio_mean=norm["mean"], audio_std=norm["std"])
    if ckpt is not None:
        changes = _config_changes(ckpt["config"], cfg.to_dict())
        if changes:
            raise TrainError(f"{out} holds a run with other settings ({'; '.join(changes)}). Resume with the same "
                             f"config (only {sorted(RESUMABLE_CHANGES)} may change) or use a new --out folder.")
        if ckpt["data"]["dirs"] != list(data.dirs):
            raise TrainError(f"{out} was trained on {ckpt['data']['dirs']}, not {list(data.dirs)}; use a new --out")
    return cfg, DiTConfig.from_dict(source["model_config"])


def _train(data: TrainData, out: Path, cfg: TrainConfig, *, job: str, init: Optional[_Init],
           progress: Optional[Progress]) -> dict[str, Any]:
    rank, world = _dist()
    device = _device(cfg.device)
    autocast = cfg.bf16 and device.type == "cuda"
    last = out / LAST
    ckpt = load_checkpoint(last) if last.exists() else None
    cfg, model_cfg = _resolve(data, cfg, out, ckpt, init)
    source = ckpt or (init.ckpt if init else None)

    # model, EMA, optimiser
    torch.manual_seed(cfg.seed)
    model = VSSFlowDiT(model_cfg).to(device)
    if source is not None:
        model.load_state_dict(source["model"])
    ema = None
    if cfg.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr_at(0, cfg), betas=cfg.betas,
                                  weight_decay=cfg.weight_decay)
    generator = torch.Generator(device)
    step = 0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        step = int(ckpt["step"])
        _set_rng_state(ckpt["rng"], generator)
        if ckpt["data"]["num_workers"] != cfg.num_workers or ckpt["data"]["world_size"] != world:
            warnings.warn(f"resuming with {cfg.num_workers} loader workers x {world} processes instead of "
                          f"{ckpt['data']['num_workers']} x {ckpt['data']['world_size']}: the data order differs "
                          f"from an uninterrupted run", stacklevel=2)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)

    prep = SamplePrep(contract=data.contract, audio_repr=cfg.audio_repr, latent_sample=cfg.latent_sample,
                      audio_mean=cfg.audio_mean, audio_std=cfg.audio_std, max_audio_frames=model_cfg.max_audio_frames,
                      max_video_frames=model_cfg.max_video_frames, audio_fps=model_cfg.audio_fps)
    loader = TrainLoader(data, prep, batch_size=cfg.batch_size, seed=cfg.seed, num_workers=cfg.num_workers,
                         epoch_steps=cfg.epoch_steps, shuffle_buffer=cfg.shuffle_buffer, rank=rank)
    lead = rank == 0
    val_batches = []
    if lead and data.held_out:
        val_batches = fixed_batches(load_samples(data.held_out, prep, cfg.seed), cfg.batch_size,
                                    data.contract.video_dim, model_cfg.audio_fps)
    metrics = Metrics(out / "metrics.jsonl", step) if lead else None

    def state() -> dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "job": job, "step": step, "model": model.state_dict(),
                "model_config": model_cfg.to_dict(), "optimizer": optimizer.state_dict(),
                "ema": ema.state_dict() if ema is not None else None, "rng": _rng_state(generator),
                "data": {"position": step, "dirs": list(data.dirs), "epoch_steps": cfg.epoch_steps,
                         "num_workers": cfg.num_workers, "world_size": world, "batch_size": cfg.batch_size,
                         "seed": cfg.seed, **{k: v for k, v in data.describe().items() if k != "dirs"}},
                "config": cfg.to_dict(), "audio_norm": {"mean": cfg.audio_mean, "std": cfg.audio_std},
                "contract": data.contract.to_dict(), "feature_hash": data.contract.feature_hash,
                "init_from": init.path if init else (ckpt or {}).get("init_from"),
                "parameters": count_parameters(model)}

    start_step, saves = step, 0
    window: dict[str, Any] = {"loss": 0.0, "n": 0, "by_task": {}, "wait": 0.0, "t0": time.perf_counter()}
    wall0 = time.perf_counter()
    total_wait = 0.0
    last_loss = val = val_ema = None
    batches = loader.batches(step)
    net.train()
    try:
        while step < cfg.steps:
            t_wait = time.perf_counter()
            batch = _to(next(batches), device)
            waited = time.perf_counter() - t_wait
            generator.manual_seed(seed_of(cfg.seed, rank, step))
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses = flow_loss(net, batch, generator, cfg, autocast)                      # [B]
            loss = losses.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1

            loss_value = float(loss.detach())
            if world > 1:
                import torch.distributed as dist

                reduced = loss.detach().clone()
                dist.all_reduce(reduced)
                loss_value = float(reduced) / world
            window["loss"] += loss_value
            window["n"] += 1
            window["wait"] += waited
            total_wait += waited
            for task, value in zip(batch["task"], losses.detach().tolist()):
                s, n = window["by_task"].get(task, (0.0, 0))
                window["by_task"][task] = (s + value, n + 1)
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {step}")

            if lead and (step % cfg.log_every == 0 or step == cfg.steps):
                elapsed = time.perf_counter() - window["t0"]
                last_loss = window["loss"] / window["n"]
                record = {"step": step, "loss": last_loss, "lr": lr, "grad_norm": grad_norm,
                          "steps_per_s": window["n"] / elapsed, "samples_per_s": window["n"] * cfg.batch_size * world
                          / elapsed, "data_wait_frac": window["wait"] / elapsed,
                          **{f"loss_{t}": s / n for t, (s, n) in sorted(window["by_task"].items())}}
                metrics.write(record)
                if progress:
                    progress({"event": "log", "steps": cfg.steps, **record})
                window.update(loss=0.0, n=0, by_task={}, wait=0.0, t0=time.perf_counter())
            if lead and (step % cfg.eval_every == 0 or step == cfg.steps) and val_batches:
                val = validation_loss(model, val_batches, cfg, device, autocast)
                record = {"step": step, "val_loss": val}
                if ema is not None:
                    val_ema = validation_loss(ema.module, val_batches, cfg, device, autocast)
                    record["val_loss_ema"] = val_ema
                metrics.write(record)
                if progress:
                    progress({"event": "eval", "steps": cfg.steps, **record})
            if lead and (step % cfg.save_every == 0 or step == cfg.steps):
                save_checkpoint(state(), last)
                saves += 1
    finally:
        batches.close()
        if metrics is not None:
            metrics.close()

    wall = time.perf_counter() - wall0
    done = step - start_step
    summary = {"job": job, "out": str(out), "rank": rank, "world_size": world, "device": str(device),
               "start_step": start_step, "steps": step, "steps_this_run": done, "samples_this_run":
               done * cfg.batch_size, "wall_s": wall, "steps_per_s": done / wall if wall else None,
               "samples_per_s": done * cfg.batch_size * world / wall if wall else None,
               "data_wait_frac": total_wait / wall if wall else None, "loss": last_loss, "val_loss": val,
               "val_loss_ema": val_ema, "checkpoints_written": saves, "parameters": count_parameters(model),
               "model": model_cfg.to_dict(), "sources": describe_sources(data.sources),
               "checkpoint": str(last) if lead else None, "metrics": str(out / "metrics.jsonl") if lead else None,
               "host": socket.gethostname(), "pid": os.getpid()}
    workers = out / "workers"
    workers.mkdir(parents=True, exist_ok=True)
    (workers / f"rank-{rank}.json").write_text(json.dumps(summary, indent=2, default=str))
    if lead:
        (out / "report.json").write_text(json.dumps({**summary, "config": cfg.to_dict(),
                                                      "data": data.describe()}, indent=2, default=str))
    return summary


# ----------------------------------------------------------------------------------------------------------------------
# Jobs


def run_pretrain(data_dirs: Sequence[str | Path], out: str | Path, config: TrainConfig, *,
                 progress: Optional[Progress] = None) -> dict[str, Any]:
    """Joint pretraining on V2S, VisualTTS, TTS (and joint) extract outputs; resumes from out/ckpt/last.pt."""
    data = plan_pretrain(data_dirs, task_weights=config.task_weights, val_split=config.val_split,
                         val_samples=config.val_samples)
    return train(data, out, config, job="pretrain", progress=progress)


def run_finetune(init_ckpt: str | Path, mix_dirs: Sequence[str | Path], real_joint_dirs: Sequence[str | Path] = (),
                 synthetic_ratio: float = 0.5, out: str | Path = "runs/finetune",
                 config: Optional[TrainConfig] = None, *, progress: Optional[Progress] = None) -> dict[str, Any]:
    """Joint fine-tuning from a pretraining checkpoint (its weights and EMA; a new optimiser and schedule) on
    mixture folders plus optional real joint folders; `synthetic_ratio` is the mixtures' share of the stream.
    The model configuration and audio normalisation come from the checkpoint; set video_frame_mask_p in the
    config to mask video frames. Resumes from out/ckpt/last.pt when it exists."""
    config = config or TrainConfig()
    if config.task_weights is not None:
        raise TrainError("task_weights applies to pretraining; fine-tuning mixes by synthetic_ratio")
    init = _Init(str(init_ckpt), load_checkpoint(init_ckpt))
    model_fields = {k: init.ckpt["config"][k] for k in ("preset", "model_overrides", "audio_repr", "latent_sample")}
    config = dataclasses.replace(config, **model_fields)   # the network is the pretrained one
    data = plan_finetune(mix_dirs, real_joint_dirs, synthetic_ratio, val_split=config.val_split,
                         val_samples=config.val_samples)
    return train(data, out, config, job="finetune", init=init, progress=progress)


__all__ = ["TrainConfig", "TrainError", "DataError", "lr_at", "model_config_for", "load_checkpoint", "ema_weights",
           "save_checkpoint", "read_metrics", "train", "run_pretrain", "run_finetune"]
