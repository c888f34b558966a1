"""Local encoder directories for the time-sensitive streams (lip, sync, speaker): TorchScript, checked before work.

A directory holds `config.json` and `model.ts` (a `torch.jit.save`d module); nothing is downloaded and nothing is
unpickled (TorchScript archives hold code and tensors, loaded by `torch.jit.load`). config.json states what the
contract records and what the stages need:

    {"kind": "lip", "dim": 1024, "input_size": 88, "mean": 0.421, "std": 0.165, "name": "avhubert-large"}
    {"kind": "sync", "dim": 768, "input_size": 224, "fps": 25, "window": 16, "name": "synchformer"}
    {"kind": "speaker", "dim": 256, "name": "rawnet3"}

Interfaces (float32 in, float32 out):
    lip      forward(x [B, T, 1, S, S] in (pixel / 255 - mean) / std) -> [B, T, dim]
    sync     forward(frames [B, W, 3, S, S] in [0, 1], audio [B, W * 16000 / fps]) -> [B, W, dim]
    speaker  forward(wave [B, N] at 16 kHz) -> [B, dim]

`check_encoder_dir` runs on the driver before any work: a missing folder, a config that is not JSON or lacks a
key, another kind, or a model file that is not a TorchScript archive is a ModelDirError naming the path.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from stages.model_dir import ModelDirError, read_model_config

MODEL_FILE = "model.ts"
KINDS = {"lip": ("dim", "input_size"), "sync": ("dim", "input_size", "fps", "window"), "speaker": ("dim",)}


def check_encoder_dir(model_dir: str | os.PathLike, kind: str) -> tuple[Path, dict[str, Any]]:
    """(path, config) of a valid encoder directory of `kind`, or a ModelDirError saying what is wrong."""
    what = f"{kind} encoder"
    path = Path(model_dir).expanduser()
    layout = (f" A {what} directory holds config.json ({{\"kind\": \"{kind}\", "
              + ", ".join(f'"{k}": ...' for k in KINDS[kind]) + f"}}) and {MODEL_FILE} (torch.jit.save).")
    if not path.is_dir():
        raise ModelDirError(f"{what} directory not found: {path} does not exist.{layout}")
    if not (path / "config.json").is_file():
        raise ModelDirError(f"{what} directory {path} has no config.json.{layout}")
    config = read_model_config(path, what)
    if config.get("kind") != kind:
        raise ModelDirError(f"{what} directory {path} holds a {config.get('kind')!r} encoder, not a {kind!r} one."
                            f"{layout}")
    for key in KINDS[kind]:
        value = config.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ModelDirError(f"{what} config {path / 'config.json'}: {key!r} must be a positive number, got "
                                f"{value!r}.{layout}")
    model = path / MODEL_FILE
    if not model.is_file():
        raise ModelDirError(f"{what} directory {path} has no {MODEL_FILE}.{layout}")
    if not _is_torchscript(model):
        raise ModelDirError(f"{what} model {model} is not a TorchScript archive (truncated, or saved with "
                            f"torch.save instead of torch.jit.save).{layout}")
    return path.resolve(), config


def _is_torchscript(path: Path) -> bool:
    """A whole zip archive holding TorchScript code and constants (torch.save archives hold neither)."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        names = zipfile.ZipFile(path).namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    return any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names)


def describe_encoder_dir(model_dir: str | os.PathLike, kind: str) -> dict[str, Any]:
    """What the feature contract records about an encoder directory (its model_dir is left out of the hash)."""
    path, config = check_encoder_dir(model_dir, kind)
    info = {k: config[k] for k in KINDS[kind]}
    return {"name": str(config.get("name", path.name)), "format": "torchscript", "model_dir": str(path), **info,
            "random_init": bool(config.get("random_init", False))}


def load_encoder(model_dir: str | os.PathLike, kind: str, device: str = "cpu"):
    """(TorchScript module in eval mode on device, config)."""
    import torch

    path, config = check_encoder_dir(model_dir, kind)
    module = torch.jit.load(str(path / MODEL_FILE), map_location=device).eval()
    return module, config
