"""Loading job configuration: frozen dataclasses, from YAML (`--config`) and overrides from the command line.

Each config dataclass lives with what it configures (stages/*.py, pipeline/jobs/*.py, model/train.py); this module
turns plain data into them, refusing unknown keys. Every value is recorded in `dataset.json` and `report.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Optional, get_type_hints

from pipeline.errors import ConfigError


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls, data: dict[str, Any], where: str = ""):
    """Build a (nested) config dataclass from a plain dict; unknown keys are an error, not ignored."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} in {where or cls.__name__}; "
                          f"known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, f"{where}.{key}" if where else key)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # a config class refusing a value says why; name where it was
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        data = data.setdefault(p, {})
    data[parts[-1]] = value


def load_config(cls, path: Optional[Path] = None, overrides: Optional[dict[str, Any]] = None):
    """Defaults <- YAML file <- overrides ({"visual.model_dir": ...}); None overrides are skipped."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_path(data, dotted, value)
    return from_dict(cls, data)


def config_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True, default=str).encode()).hexdigest()[:16]
