"""The training loop: joint pretraining and joint fine-tuning of VSSFlow by conditional flow matching.

Straight-line code in the nanoGPT / MMAudio manner: one device chosen at the top; the config's unset training values
taken from its preset (model/train_config.py `resolve_training`); a learning rate that is a pure function of the
step (linear warm-up, then constant); AdamW with gradient clipping; an EMA whose decay warms up (model/ema.py); bf16
autocast on CUDA only. Per step, one torch.Generator, re-seeded from
(seed, rank, step), draws the flow time, the noise and the classifier-free-guidance dropout (and the per-frame video
masking of fine-tuning): the draws of step s do not depend on how the run got to step s, so a resumed run repeats an
uninterrupted one exactly (on CPU, with `deterministic`), given the data stream's own resume (model/data/stream.py).
The loss itself is model/loss.py.

A run lives in one folder RUN:
  RUN/ckpt/last.pt        the latest checkpoint (model/checkpoint.py); a run started on a RUN that has one resumes
                          from it
  RUN/metrics.jsonl       one JSON line per log / eval, and RUN/tensorboard/ with the same scalars (model/metrics.py)
  RUN/report.json         the summary of the last finished invocation
  RUN/workers/rank-N.json what each training process did (steps, samples, checkpoints written, device)

Several processes: when torch.distributed is initialised (e.g. by Ray Train's TorchTrainer, see
pipeline/cli/train.py), the model is wrapped in DistributedDataParallel, each rank reads its own seeded stream, and
rank 0 alone validates and writes checkpoints and metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from manifests.atomic import atomic_write_text
from model.checkpoint import (
    LAST,
    REPORT,
    InitCheckpoint,
    TrainError,
    check_resume,
    checkpoint_state,
    config_from_checkpoint,
    load_checkpoint,
    restore,
    save_checkpoint,
)
from model.config import DiTConfig
from model.data import (
    TrainData,
    TrainLoader,
    describe_sources,
    estimate_audio_norm,
    fixed_batches,
    load_samples,
    plan_finetune,
    plan_pretrain,
    prep_for_model,
    seed_of,
)
from model.dit import VSSFlowDiT, count_parameters
from model.ema import EMA
from model.loss import flow_loss, to_device, validation_loss
from model.metrics import METRICS, LogWindow, Metrics
from model.train_config import TrainConfig, adopt_resolved, model_config_for, resolve_training, training_summary
from stages.device import pick_device

Progress = Callable[[dict[str, Any]], None]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of update `step` (0-based) under a resolved config: linear warm-up over warmup_steps, then
    constant."""
    if cfg.warmup_steps <= 0:
        return cfg.lr
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)


# ----------------------------------------------------------------------------------------------------------------------
# The loop


@dataclass
class _Run:
    """One training process between steps: what `_set_up` built, and the step it has reached."""

    data: TrainData
    out: Path
    cfg: TrainConfig                        # resolved: the preset's training values, the audio normalisation
    origins: dict[str, str]                 # where each preset-dependent value came from (resolve_training)
    model_cfg: DiTConfig
    job: str
    init_from: Optional[str]                # the fine-tuning init checkpoint (of this run or the one it resumes)
    rank: int
    world: int
    device: torch.device
    model: VSSFlowDiT                       # the plain network: checkpoints, validation, EMA
    net: torch.nn.Module                    # the model, or its DistributedDataParallel wrapper: the training step
    ema: Optional[EMA]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator              # re-seeded from (seed, rank, step) at every step
    loader: TrainLoader
    val_batches: list[dict[str, Any]]       # rank 0 only
    metrics: Optional[Metrics]              # rank 0 only
    step: int

    @property
    def autocast(self) -> bool:
        return self.cfg.bf16 and self.device.type == "cuda"

    def due(self, every: int) -> bool:
        """Whether this process logs / evaluates / saves now: rank 0, every `every` steps and after the last."""
        return self.rank == 0 and (self.step % every == 0 or self.step == self.cfg.steps)


@dataclass
class _Totals:
    """What the summary says about this invocation."""

    start_step: int
    saves: int = 0
    wait: float = 0.0
    loss: Optional[float] = None                               # of the last log record
    val: Optional[float] = None
    val_ema: Optional[float] = None
    t0: float = field(default_factory=time.perf_counter)


def train(data: TrainData, out: str | Path, cfg: TrainConfig, *, job: str, init: Optional[InitCheckpoint] = None,
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


def _train(data: TrainData, out: Path, cfg: TrainConfig, *, job: str, init: Optional[InitCheckpoint],
           progress: Optional[Progress]) -> dict[str, Any]:
    run = _set_up(data, out, cfg, job=job, init=init)
    if progress and run.rank == 0:
        progress({"event": "start", "steps": run.cfg.steps, "step": run.step,
                  "training": training_summary(run.cfg, run.origins)})
    window, totals = LogWindow(), _Totals(start_step=run.step)
    batches = run.loader.batches(run.step)
    run.net.train()
    try:
        while run.step < run.cfg.steps:
            t_wait = time.perf_counter()
            batch = to_device(next(batches), run.device)
            waited = time.perf_counter() - t_wait
            loss, losses, lr, grad_norm = _step(run, batch)
            loss_value = _mean_over_ranks(loss, run.world)
            window.add(loss_value, losses.detach().tolist(), batch["task"], waited)
            totals.wait += waited
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {run.step}")

            if run.due(run.cfg.log_every):
                totals.loss = _log(run, window, lr, grad_norm, progress)
                window = LogWindow()
            if run.due(run.cfg.eval_every) and run.val_batches:
                totals.val, totals.val_ema = _evaluate(run, progress)
            if run.due(run.cfg.save_every):
                save_checkpoint(_checkpoint(run), run.out / LAST)
                totals.saves += 1
    finally:
        batches.close()
        if run.metrics is not None:
            run.metrics.close()
    return _report(run, totals)


def _step(run: _Run, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """One optimiser update: (mean loss, per-sample losses [B], learning rate, gradient norm before clipping)."""
    run.generator.manual_seed(seed_of(run.cfg.seed, run.rank, run.step))
    lr = lr_at(run.step, run.cfg)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    losses = flow_loss(run.net, batch, run.generator, run.cfg, run.autocast)              # [B]
    loss = losses.mean()
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip))
    run.optimizer.step()
    if run.ema is not None:
        run.ema.update(run.model)
    run.step += 1
    return loss, losses, lr, grad_norm


def _mean_over_ranks(loss: torch.Tensor, world: int) -> float:
    if world == 1:
        return float(loss.detach())
    import torch.distributed as dist

    reduced = loss.detach().clone()
    dist.all_reduce(reduced)
    return float(reduced) / world


def _log(run: _Run, window: LogWindow, lr: float, grad_norm: float, progress: Optional[Progress]) -> float:
    """Write the window's record; returns its mean loss."""
    record = window.record(run.step, lr, grad_norm, run.cfg.batch_size * run.world)
    run.metrics.write(record)
    if progress:
        progress({"event": "log", "steps": run.cfg.steps, **record})
    return record["loss"]


def _evaluate(run: _Run, progress: Optional[Progress]) -> tuple[Optional[float], Optional[float]]:
    """Validation loss of the model and of its EMA (None without one), written as one record."""
    val = validation_loss(run.model, run.val_batches, run.cfg, run.device, run.autocast)
    record = {"step": run.step, "val_loss": val}
    val_ema = None
    if run.ema is not None:
        val_ema = validation_loss(run.ema.module, run.val_batches, run.cfg, run.device, run.autocast)
        record["val_loss_ema"] = val_ema
    run.metrics.write(record)
    if progress:
        progress({"event": "eval", "steps": run.cfg.steps, **record})
    return val, val_ema


def _checkpoint(run: _Run) -> dict[str, Any]:
    return checkpoint_state(job=run.job, step=run.step, model=run.model, model_cfg=run.model_cfg,
                            optimizer=run.optimizer, ema=run.ema, generator=run.generator, data=run.data,
                            cfg=run.cfg, origins=run.origins, world=run.world, init_from=run.init_from)


# ----------------------------------------------------------------------------------------------------------------------
# Setting up and reporting


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _set_up(data: TrainData, out: Path, cfg: TrainConfig, *, job: str, init: Optional[InitCheckpoint]) -> _Run:
    """The resolved config; the network (fresh, from `init`, or resumed from RUN's checkpoint), EMA and optimiser;
    the data stream and validation batches. The network is initialised from torch's global generator seeded by
    cfg.seed; a resumed run then puts back every generator's state."""
    rank, world = _dist()
    device = torch.device(pick_device(cfg.device))
    last = out / LAST
    ckpt = load_checkpoint(last) if last.exists() else None
    cfg, model_cfg, origins = _resolve(data, cfg, out, ckpt, init)
    model, ema, optimizer = _network(cfg, model_cfg, device, ckpt or (init.ckpt if init else None))
    generator = torch.Generator(device)
    step = 0
    if ckpt is not None:
        step = restore(ckpt, optimizer, ema, generator)
        if ckpt["data"]["num_workers"] != cfg.num_workers or ckpt["data"]["world_size"] != world:
            warnings.warn(f"resuming with {cfg.num_workers} loader workers x {world} processes instead of "
                          f"{ckpt['data']['num_workers']} x {ckpt['data']['world_size']}: the data order differs "
                          f"from an uninterrupted run", stacklevel=3)
    net = model
    if world > 1:
        # a batch without a valid frame of a stream (all v2s, or dropped) leaves its front-end without gradient
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(model_cfg.streams or model_cfg.ref_token))
    loader, val_batches = _data(data, cfg, model_cfg, rank)
    return _Run(data=data, out=out, cfg=cfg, origins=origins, model_cfg=model_cfg, job=job,
                init_from=init.path if init else (ckpt or {}).get("init_from"), rank=rank, world=world,
                device=device, model=model, net=net, ema=ema, optimizer=optimizer, generator=generator,
                loader=loader, val_batches=val_batches, metrics=Metrics(out / METRICS, step) if rank == 0 else None,
                step=step)


def _resolve(data: TrainData, cfg: TrainConfig, out: Path, ckpt: Optional[dict], init: Optional[InitCheckpoint]
             ) -> tuple[TrainConfig, DiTConfig, dict[str, str]]:
    """The run's resolved config, its network, and where the preset-dependent values came from: from its checkpoint
    (resume: unset values as the run started), else the preset's training values, then the network and audio
    normalisation of the init checkpoint (fine-tuning) or the preset sized to the data with the normalisation
    estimated from it. Refuses mismatches."""
    if ckpt is not None:
        cfg, model_cfg = config_from_checkpoint(ckpt, out / LAST, adopt_resolved(cfg, ckpt["config"]), data)
        check_resume(ckpt, cfg, data.dirs, out)
        return cfg, model_cfg, ckpt["config_origins"]
    cfg, origins = resolve_training(cfg)
    if init is not None:
        return (*config_from_checkpoint(init.ckpt, init.path, cfg, data), origins)
    if cfg.audio_mean is None or cfg.audio_std is None:
        mean, std = estimate_audio_norm(data, cfg.audio_repr, cfg.norm_samples)
        cfg = dataclasses.replace(cfg, audio_mean=cfg.audio_mean if cfg.audio_mean is not None else mean,
                                  audio_std=cfg.audio_std if cfg.audio_std is not None else std)
    return cfg, model_config_for(cfg, data.contract), origins


def _network(cfg: TrainConfig, model_cfg: DiTConfig, device: torch.device, source: Optional[dict]
             ) -> tuple[VSSFlowDiT, Optional[EMA], torch.optim.Optimizer]:
    """The network (seeded by cfg.seed; the weights of `source` when given), its EMA and the optimiser."""
    torch.manual_seed(cfg.seed)
    model = VSSFlowDiT(model_cfg).to(device)
    if source is not None:
        model.load_state_dict(source["model"])
    ema = EMA(model, cfg.ema_decay) if cfg.ema else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr_at(0, cfg), betas=cfg.betas,
                                  weight_decay=cfg.weight_decay)
    return model, ema, optimizer


def _data(data: TrainData, cfg: TrainConfig, model_cfg: DiTConfig, rank: int
          ) -> tuple[TrainLoader, list[dict[str, Any]]]:
    """This rank's training stream, and the validation batches (rank 0 only)."""
    prep = prep_for_model(data.contract, model_cfg, audio_repr=cfg.audio_repr, audio_mean=cfg.audio_mean,
                          audio_std=cfg.audio_std, latent_sample=cfg.latent_sample)
    loader = TrainLoader(data, prep, batch_size=cfg.batch_size, seed=cfg.seed, num_workers=cfg.num_workers,
                         epoch_steps=cfg.epoch_steps, shuffle_buffer=cfg.shuffle_buffer, rank=rank)
    val_batches = []
    if rank == 0 and data.held_out:
        val_batches = fixed_batches(load_samples(data.held_out, prep, cfg.seed, data.checksums), cfg.batch_size, prep)
    return loader, val_batches


def _report(run: _Run, totals: _Totals) -> dict[str, Any]:
    """The summary of this invocation, written to RUN/workers/rank-N.json (and by rank 0 to RUN/report.json)."""
    wall = time.perf_counter() - totals.t0
    done = run.step - totals.start_step
    cfg, out, lead = run.cfg, run.out, run.rank == 0
    summary = {"job": run.job, "out": str(out), "rank": run.rank, "world_size": run.world, "device": str(run.device),
               "start_step": totals.start_step, "steps": run.step, "steps_this_run": done, "samples_this_run":
               done * cfg.batch_size, "wall_s": wall, "steps_per_s": done / wall if wall else None,
               "samples_per_s": done * cfg.batch_size * run.world / wall if wall else None,
               "data_wait_frac": totals.wait / wall if wall else None, "loss": totals.loss, "val_loss": totals.val,
               "val_loss_ema": totals.val_ema, "checkpoints_written": totals.saves,
               "parameters": count_parameters(run.model), "model": run.model_cfg.to_dict(),
               "training": training_summary(cfg, run.origins), "ema": run.ema.span() if run.ema else None,
               "sources": describe_sources(run.data.sources), "checkpoint": str(out / LAST) if lead else None,
               "metrics": str(out / METRICS) if lead else None, "host": socket.gethostname(), "pid": os.getpid()}
    atomic_write_text(out / "workers" / f"rank-{run.rank}.json", json.dumps(summary, indent=2, default=str))
    if lead:
        atomic_write_text(out / REPORT, json.dumps({**summary, "config": cfg.to_dict(), "data": run.data.describe()},
                                                   indent=2, default=str))
    return summary


def read_report(out: str | Path) -> dict[str, Any]:
    """RUN/report.json: the summary of the run's last finished invocation."""
    return json.loads((Path(out) / REPORT).read_text())


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
    """Joint fine-tuning from a pretraining checkpoint (its weights; a new EMA, optimiser and schedule) on
    mixture folders plus optional real joint folders; `synthetic_ratio` is the mixtures' share of the stream.
    The model configuration and audio normalisation come from the checkpoint; set video_frame_mask_p in the
    config to mask video frames. Resumes from out/ckpt/last.pt when it exists."""
    config = config or TrainConfig()
    if config.task_weights is not None:
        raise TrainError("task_weights applies to pretraining; fine-tuning mixes by synthetic_ratio")
    init = InitCheckpoint(str(init_ckpt), load_checkpoint(init_ckpt))
    model_fields = {k: init.ckpt["config"][k] for k in ("preset", "model_overrides", "audio_repr", "latent_sample")}
    config = dataclasses.replace(config, **model_fields)   # the network is the pretrained one
    data = plan_finetune(mix_dirs, real_joint_dirs, synthetic_ratio, val_split=config.val_split,
                         val_samples=config.val_samples)
    return train(data, out, config, job="finetune", init=init, progress=progress)


__all__ = ["lr_at", "train", "run_pretrain", "run_finetune"]
