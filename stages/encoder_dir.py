"""Local encoder directories for the time-sensitive streams (lip, sync, speaker), checked before work.

TorchScript layout: `config.json` and `model.ts` (a `torch.jit.save`d module); nothing is downloaded and nothing
is unpickled (TorchScript archives hold code and tensors, loaded by `torch.jit.load`). config.json states what the
contract records and what the stages need:

    {"kind": "lip", "dim": 1024, "input_size": 88, "mean": 0.421, "std": 0.165, "name": "avhubert-large"}
    {"kind": "sync", "dim": 768, "input_size": 224, "fps": 25, "window": 16, "name": "synchformer"}
    {"kind": "speaker", "dim": 256, "name": "rawnet3"}

Interfaces (float32 in, float32 out):
    lip      forward(x [B, T, 1, S, S] in (pixel / 255 - mean) / std) -> [B, T, dim]
    sync     forward(frames [B, W, 3, S, S] in [0, 1], audio [B, W * 16000 / fps]) -> [B, W, dim]
    speaker  forward(wave [B, N] at 16 kHz) -> [B, dim]

Hugging Face layout (lip encoders): a transformers video model directory (`config.json` with its `model_type`,
`model.safetensors`) whose config.json also holds `"vssflow": {"kind": "lip", "dim": ..., "input_size": ...}`.
It is loaded with `AutoModel.from_pretrained(local_files_only=True)` and called as
`model(pixel_values=[B, W, 1, S, S]).last_hidden_state` on windows of its `num_frames` (VideoMAE-style: W x P
patch tokens, a class token first where it has one), the tokens of each frame averaged: [B, W, dim].

`check_encoder_dir` runs on the driver before any work: a missing folder, a config that is not JSON or lacks a
key, another kind, or a model file that is not a TorchScript archive (or safetensors weights) is a ModelDirError
naming the path.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

from stages.model_dir import ModelDirError, check_model_dir, read_model_config

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
    if isinstance(config.get("vssflow"), dict) and kind == "lip":   # the Hugging Face layout
        check_model_dir(path, what, hint=layout)
        config = {**config["vssflow"], "format": "hf"}
    if config.get("kind") != kind:
        raise ModelDirError(f"{what} directory {path} holds a {config.get('kind')!r} encoder, not a {kind!r} one."
                            f"{layout}")
    for key in KINDS[kind]:
        value = config.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ModelDirError(f"{what} config {path / 'config.json'}: {key!r} must be a positive number, got "
                                f"{value!r}.{layout}")
    if config.get("format") == "hf":
        return path.resolve(), config
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
    return {"name": str(config.get("name", path.name)), "format": config.get("format", "torchscript"),
            "model_dir": str(path), **info,
            "random_init": bool(config.get("random_init", False))}


def load_encoder(model_dir: str | os.PathLike, kind: str, device: str = "cpu"):
    """(TorchScript module in eval mode on device, config)."""
    import torch

    path, config = check_encoder_dir(model_dir, kind)
    if config.get("format") == "hf":
        return HFVideoEncoder(path, device), config
    module = torch.jit.load(str(path / MODEL_FILE), map_location=device).eval()
    return module, config


class HFVideoEncoder:
    """A transformers video model as a lip encoder: [B, T, 1, S, S] -> [B, T, dim], in windows of its num_frames."""

    def __init__(self, path: Path, device: str):
        from transformers import AutoModel

        self.model = AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True).to(device)
        self.model.eval()
        self.window = int(getattr(self.model.config, "num_frames", 1))

    def __call__(self, x):
        import torch

        b, t = x.shape[:2]
        padded = -(-t // self.window) * self.window
        x = torch.cat([x, x[:, -1:].expand(b, padded - t, *x.shape[2:])], dim=1)         # [B, T', 1, S, S]
        x = x.reshape(b * padded // self.window, self.window, *x.shape[2:])             # [B*N_w, W, 1, S, S]
        tokens = self.model(pixel_values=x).last_hidden_state                          # [B*N_w, N, D]
        if tokens.shape[1] % self.window:                                               # a class token first
            tokens = tokens[:, 1:]
        per_frame = tokens.reshape(tokens.shape[0], self.window, -1, tokens.shape[-1]).mean(dim=2)  # [B*N_w, W, D]
        return per_frame.reshape(b, padded, -1)[:, :t]                                  # [B, T, D]
