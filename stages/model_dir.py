"""Local model directories in the Hugging Face layout: checked before any work, with the path and what is missing.

Nothing is downloaded at run time, so every model the project loads (the CLIP vision tower, the AudioLDM VAE, the
HiFi-GAN vocoder) comes from a folder holding `config.json` and a weights file. `check_model_dir` fails early and
says what a valid folder holds; loaders then read it with `local_files_only=True`. Weights must be safetensors: a
folder with only pickled weights (`*.bin`) is refused before any worker starts, since unpickling can run code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from manifests.errors import PipelineError

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
SAFE_SUFFIXES = (".safetensors", ".safetensors.index.json")   # weights loadable without unpickling anything


class ModelDirError(PipelineError, FileNotFoundError):
    """A model directory that is missing, is not in the Hugging Face layout, or does not fit the features."""


def check_model_dir(model_dir: str | os.PathLike, what: str = "visual model",
                    weight_files: Sequence[str] = HF_WEIGHT_FILES, hint: str = "") -> Path:
    """The directory as a Path, or a ModelDirError naming it and what a valid directory holds."""
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise ModelDirError(f"{what} directory not found: {path} does not exist. Pass a local directory in the "
                            f"Hugging Face layout (config.json + {weight_files[0]}); nothing is downloaded at run "
                            f"time.{hint}")
    if not (path / "config.json").is_file():
        raise ModelDirError(f"{what} directory {path} has no config.json: is it a Hugging Face model directory?"
                            f"{hint}")
    present = [name for name in weight_files if (path / name).is_file()]
    if not present:
        raise ModelDirError(f"{what} directory {path} has no weights ({', '.join(weight_files)}){hint}")
    if not any(name.endswith(SAFE_SUFFIXES) for name in present):
        raise ModelDirError(f"{what} directory {path} holds only pickled weights ({', '.join(present)}), which are "
                            "never loaded (a pickle can run code). Save it as safetensors, e.g. "
                            "`Model.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)` on a "
                            f"machine you trust{hint}")
    read_model_config(path, what)
    return path


def read_model_config(path: Path, what: str) -> dict[str, Any]:
    """`config.json` of a model directory as a dict, or a ModelDirError saying why not."""
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ModelDirError(f"{what} config {config_path} is unreadable: {e}") from None
    if not isinstance(config, dict):
        raise ModelDirError(f"{what} config {config_path} is not a JSON object")
    return config
