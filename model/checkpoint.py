"""The trainer's checkpoint: what it holds, saving and loading it, and what a resumed or fine-tuned run takes from it.

RUN/ckpt/last.pt is the latest checkpoint of the run in folder RUN, written atomically (temporary file, fsync,
rename: `manifests.atomic`); a run started on a RUN that has one resumes from it.

A checkpoint holds only tensors and plain types (`torch.load(..., weights_only=True)`): the plain model's weights,
the optimiser, the EMA (its weights, updates and decay) and what it averages (`ema_span`, model/ema.py), step, RNG
states (torch, CUDA, numpy, python, the step generator), the data position, the resolved TrainConfig (and where its
preset-dependent values came from) and DiTConfig, the audio normalisation, and the feature contract of the training
data (so `generate` can extract conditions exactly as the data was extracted).

It also holds a sha256 of all that (`content_digest`: every key, plain value and tensor byte in a fixed order),
checked on every load: a checkpoint with flipped bytes is refused, as are empty, truncated and foreign files, each
with one message saying which (CheckpointError).

A resumed run must train on the same features and folders with the same settings, except RESUMABLE_CHANGES; a
fine-tuning run takes the network, its weights and the audio normalisation of its initial checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from manifests.atomic import atomic_open
from manifests.errors import PipelineError
from model.config import DiTConfig
from model.data import TrainData
from model.dit import count_parameters
from model.ema import EMA
from model.train_config import TrainConfig
from stages.format.contract import ContractError, FeatureContract

CHECKPOINT_FORMAT = 2       # 2: a content checksum, the EMA's own state (model/ema.py)
LAST = "ckpt/last.pt"
REPORT = "report.json"      # RUN/report.json: the summary of the last finished invocation
# fields a resumed run may change; any other difference from the checkpoint's config is refused
RESUMABLE_CHANGES = frozenset({"steps", "eval_every", "save_every", "log_every", "num_workers", "device",
                               "num_threads", "bf16"})


class TrainError(PipelineError, ValueError):
    """A run that cannot start or resume as asked (clear message, no traceback needed)."""


class CheckpointError(TrainError):
    """A file that is not a whole, undamaged checkpoint of this trainer (missing, empty, truncated, foreign,
    damaged)."""


@dataclass
class InitCheckpoint:
    """Where a run's weights come from when RUN has no checkpoint (fine-tuning: the pretraining checkpoint)."""

    path: str
    ckpt: dict[str, Any]


# ----------------------------------------------------------------------------------------------------------------------
# Saving and loading


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """torch.save, with the content's checksum, through `manifests.atomic.atomic_open`: a checkpoint that exists is
    whole."""
    with atomic_open(path, "wb") as f:
        torch.save({**state, "checksum": content_digest(state)}, f)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by this trainer, its checksum verified (tensors and plain types only: weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), not a checkpoint: an interrupted copy or save? Use "
                              f"another copy")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever torch raises on a bad file, the person needs one message
        raise CheckpointError(_unreadable(path, size, e)) from None
    if not isinstance(ckpt, dict) or "format" not in ckpt:
        raise CheckpointError(f"{path} is not a VSSFlow trainer checkpoint (a torch file of something else)")
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a checkpoint of format {ckpt['format']!r}; this trainer reads format "
                              f"{CHECKPOINT_FORMAT} (format 1 had no checksum): train it again with this version")
    stored = ckpt.pop("checksum", None)
    if stored != content_digest(ckpt):
        raise CheckpointError(f"{path} is damaged: its content does not match the checksum stored in it (bytes "
                              f"changed on disk or in a copy). Use another copy, or the run's earlier checkpoint")
    return ckpt


def _unreadable(path: Path, size: int, error: Exception) -> str:
    """Why torch could not load `path`, in words: truncated, foreign pickle, not a torch file, or damaged."""
    head = path.open("rb").read(4)
    detail = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:200]
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        return (f"{path} is truncated: a torch checkpoint whose end is missing ({size} bytes). An interrupted copy "
                f"or a full disk? Use a whole copy")
    if head[:1] == b"\x80" and isinstance(error, pickle.UnpicklingError):      # a pickle (protocol 2 and up)
        return (f"{path} holds Python objects, not only tensors and plain values: not a checkpoint of this "
                f"trainer, and not loaded (loading it could run code)")
    if head != b"PK\x03\x04":
        return f"{path} is not a torch checkpoint ({size} bytes that do not start like one)"
    return f"{path} is damaged: torch cannot read it ({detail}). Use another copy"


def content_digest(state: dict[str, Any]) -> str:
    """sha256 over a checkpoint's content: keys in sorted order, plain values by repr, tensors by dtype, shape and
    bytes. Independent of how torch lays out the file; any changed value or tensor byte changes it."""
    digest = hashlib.sha256()
    _feed(digest, state)
    return digest.hexdigest()


def _feed(digest: "hashlib._Hash", value: Any) -> None:
    if isinstance(value, dict):
        digest.update(b"{%d" % len(value))
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(b"[%d" % len(value))
        for item in value:
            _feed(digest, item)
    elif torch.is_tensor(value):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def ema_weights(ckpt: dict[str, Any]) -> Optional[dict[str, torch.Tensor]]:
    """The EMA model's weights (plain parameter names), or None when the run kept no EMA."""
    return ckpt["ema"]["weights"] if ckpt.get("ema") else None


def checkpoint_state(*, job: str, step: int, model: torch.nn.Module, model_cfg: DiTConfig,
                     optimizer: torch.optim.Optimizer, ema: Optional[EMA], generator: torch.Generator,
                     data: TrainData, cfg: TrainConfig, origins: dict[str, str], world: int,
                     init_from: Optional[str]) -> dict[str, Any]:
    """Everything a checkpoint holds (`model` is the plain network, never its DDP wrapper)."""
    return {"format": CHECKPOINT_FORMAT, "job": job, "step": step, "model": model.state_dict(),
            "model_config": model_cfg.to_dict(), "optimizer": optimizer.state_dict(),
            "ema": ema.state_dict() if ema is not None else None, "ema_span": ema.span() if ema is not None else None,
            "rng": rng_state(generator),
            "data": {"position": step, "dirs": list(data.dirs), "epoch_steps": cfg.epoch_steps,
                     "num_workers": cfg.num_workers, "world_size": world, "batch_size": cfg.batch_size,
                     "seed": cfg.seed, **{k: v for k, v in data.describe().items() if k != "dirs"}},
            "config": cfg.to_dict(), "config_origins": dict(origins),
            "audio_norm": {"mean": cfg.audio_mean, "std": cfg.audio_std},
            "contract": data.contract.to_dict(), "feature_hash": data.contract.feature_hash,
            "init_from": init_from, "parameters": count_parameters(model)}


def restore(ckpt: dict[str, Any], optimizer: torch.optim.Optimizer, ema: Optional[EMA],
            generator: torch.Generator) -> int:
    """Load a resumed run's optimiser, EMA and RNG states from its checkpoint; returns the step it reached."""
    optimizer.load_state_dict(ckpt["optimizer"])
    if ema is not None and ckpt.get("ema"):
        ema.load_state_dict(ckpt["ema"])
    step = int(ckpt["step"])
    set_rng_state(ckpt["rng"], generator)
    return step


# ----------------------------------------------------------------------------------------------------------------------
# RNG states


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every generator the run draws from, as tensors and plain types (numpy's and python's states as int64)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached": float(cached)},
            "python": {"version": version, "state": torch.tensor(state, dtype=torch.int64), "gauss": gauss},
            "generator": generator.get_state()}


def set_rng_state(rng: dict[str, Any], generator: torch.Generator) -> None:
    """Put back every generator `rng_state` saved."""
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    n = rng["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))
    generator.set_state(rng["generator"])


# ----------------------------------------------------------------------------------------------------------------------
# What a resumed or fine-tuned run takes from a checkpoint


def config_from_checkpoint(source: dict[str, Any], where: str | Path, cfg: TrainConfig, data: TrainData
                           ) -> tuple[TrainConfig, DiTConfig]:
    """`cfg` with the checkpoint's audio normalisation, and the checkpoint's network. Refuses features that differ
    from the checkpoint's and another audio representation."""
    if source["feature_hash"] != data.contract.feature_hash:
        diff = FeatureContract.from_dict(source["contract"]).differences(data.contract)
        raise ContractError(f"{where} was trained on features that differ from {', '.join(data.dirs)}: "
                            f"{'; '.join(diff[:8])}")
    if source["config"]["audio_repr"] != cfg.audio_repr:
        raise TrainError(f"audio_repr {cfg.audio_repr!r} differs from {where}'s {source['config']['audio_repr']!r}")
    norm = source["audio_norm"]
    cfg = dataclasses.replace(cfg, audio_mean=norm["mean"], audio_std=norm["std"])
    return cfg, DiTConfig.from_dict(source["model_config"])


def check_resume(ckpt: dict[str, Any], cfg: TrainConfig, dirs: Sequence[str], out: Path) -> None:
    """Refuse to resume the run in `out` with other settings (beyond RESUMABLE_CHANGES) or other data folders."""
    changes = config_changes(ckpt["config"], cfg.to_dict())
    if changes:
        raise TrainError(f"{out} holds a run with other settings ({'; '.join(changes)}). Resume with the same "
                         f"config (only {sorted(RESUMABLE_CHANGES)} may change) or use a new --out folder.")
    if ckpt["data"]["dirs"] != list(dirs):
        raise TrainError(f"{out} was trained on {ckpt['data']['dirs']}, not {list(dirs)}; use a new --out")


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """"field: old -> new" for every field that differs, except RESUMABLE_CHANGES. A field the old config does not
    have (added to TrainConfig since) counts as its default, so older runs resume."""
    defaults = TrainConfig().to_dict()
    return [f"{k}: {old.get(k, defaults.get(k))!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if k not in RESUMABLE_CHANGES and old.get(k, defaults.get(k)) != new.get(k)]
