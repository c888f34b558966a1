"""Local model directories in the Hugging Face layout: checked before any work, with the path and what is missing.

Nothing is downloaded at run time, so every model the project loads (the CLIP vision tower, the AudioLDM VAE, the
HiFi-GAN vocoder) comes from a folder holding `config.json` and a weights file. `check_model_dir` fails early and
says what a valid folder holds; loaders then read the folder it returns with `local_files_only=True`. Weights must
be safetensors: a folder with only pickled weights (`*.bin`) is refused before any worker starts, since unpickling
can run code.

A model argument that is not a local folder but reads as a Hugging Face repo id (`ORG/NAME`, then optionally
`/SUBFOLDER` and `@REVISION`: `cvssp/audioldm-s-full-v2/vae`) is looked up in the local Hugging Face cache only
(`HF_HUB_CACHE`, else huggingface_hub's default): the cached snapshot's folder is used, and a repo that is not
cached is an error saying how to fetch it once, never a download.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

from manifests.errors import PipelineError

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
SAFE_SUFFIXES = (".safetensors", ".safetensors.index.json")   # weights loadable without unpickling anything


REPO_ID = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?P<sub>(?:/[\w.-]+)*)(?:@(?P<revision>[\w.-]+))?")


class ModelDirError(PipelineError, FileNotFoundError):
    """A model directory that is missing, is not in the Hugging Face layout, or does not fit the features."""


def hub_cache() -> Optional[str]:
    """The Hugging Face cache folder asked for by the environment (None: huggingface_hub's default)."""
    return os.environ.get("HF_HUB_CACHE") or (os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME")
                                               else None)


def cached_snapshot(repo: str, revision: Optional[str] = None) -> Optional[Path]:
    """The local snapshot folder of a Hugging Face model repo, or None when it is not in the cache (offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, revision=revision, local_files_only=True, cache_dir=hub_cache()))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None


def resolve_model_dir(model_dir: str | os.PathLike, what: str = "visual model") -> Path:
    """A local folder as it is; a Hugging Face repo id (ORG/NAME[/SUBFOLDER][@REVISION]) that is not a local folder
    as its cached snapshot's folder; a ModelDirError when the id is not cached. Anything else is returned as a
    path for `check_model_dir` to name."""
    path = Path(model_dir).expanduser()
    match = REPO_ID.fullmatch(str(model_dir))
    if path.is_dir() or match is None:
        return path
    repo, sub, revision = match["repo"], match["sub"].strip("/"), match["revision"]
    snapshot = cached_snapshot(repo, revision)
    where = hub_cache() or "huggingface_hub's default cache, ~/.cache/huggingface/hub"
    if snapshot is None:
        raise ModelDirError(f"{what} {str(model_dir)!r} is not a local directory, and the Hugging Face repo {repo}"
                            f"{'@' + revision if revision else ''} is not in the local cache ({where}). Nothing is "
                            f"downloaded at run time: fetch it once where there is network (`hf download {repo}`, "
                            "same cache), or pass a local directory (README, \"Models\")")
    folder = snapshot / sub if sub else snapshot
    if not folder.is_dir():
        raise ModelDirError(f"{what}: the cached snapshot {snapshot} of {repo} has no folder {sub!r}")
    return folder


def check_model_dir(model_dir: str | os.PathLike, what: str = "visual model",
                    weight_files: Sequence[str] = HF_WEIGHT_FILES, hint: str = "") -> Path:
    """The directory as a Path (a cached Hugging Face repo id resolved to its snapshot folder), or a ModelDirError
    naming it and what a valid directory holds."""
    path = resolve_model_dir(model_dir, what)
    if not path.is_dir():
        raise ModelDirError(f"{what} directory not found: {path} does not exist. Pass a local directory in the "
                            f"Hugging Face layout (config.json + {weight_files[0]}), or the id of a Hugging Face "
                            f"repo in the local cache; nothing is downloaded at run time.{hint}")
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
