"""Loading job configuration: frozen dataclasses, from YAML (`--config`) and overrides from the command line.

Each config dataclass lives with what it configures (stages/*.py, pipeline/jobs/*.py, model/train.py); this module
turns plain data into them, refusing unknown keys. Every value is recorded in `dataset.json` and `report.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Optional, Sequence, get_type_hints

from pipeline.errors import ConfigError


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls, data: dict[str, Any], where: str = ""):
    """Build a (nested) config dataclass from plain data, checking every key and the type of every value.

    Unknown keys are an error, not ignored; values are validated against the fields' type hints (pydantic), so
    `shard_size: "x"` or `decode: 5` fail here with the key, the value and what was expected, and a value the class
    itself refuses (its `__post_init__`) is reported the same way.
    """
    from pydantic import TypeAdapter, ValidationError

    _check_keys(cls, data, where)
    try:
        return TypeAdapter(cls).validate_python(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, where)) from None


def _check_keys(cls, data: Any, where: str) -> None:
    """Unknown keys, at every level of nested config dataclasses."""
    if not isinstance(data, dict):
        return   # a value of the wrong type is the validator's to report
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} in {where or cls.__name__}; "
                          f"known: {sorted(names)}")
    for key, value in data.items():
        if dataclasses.is_dataclass(hints[key]):
            _check_keys(hints[key], value, f"{where}.{key}" if where else key)


def _describe(error, where: str) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"] if not str(part).startswith("function-"))
        key = ".".join(part for part in (where, loc) if part)          # empty: a check of the whole config
        message = item["msg"].removeprefix("Value error, ")
        shown = f" (got {item['input']!r})" if "input" in item and not isinstance(item["input"], dict) else ""
        lines.append(f"{key}: {message}{shown}" if key else f"{message}{shown}")
    return "invalid config: " + "; ".join(lines)


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(data.get(p, {}), dict):
            raise ConfigError(f"{dotted}: {p} is a {type(data[p]).__name__}, not a group of keys")
        data = data.setdefault(p, {})
    data[parts[-1]] = value


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file as a mapping; ConfigError for a missing file, invalid YAML, a tag, or not a mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(f"{path}{_where(e)}: {e.problem}; config files hold plain values (tags such as "
                          "!!python are refused)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML{_where(e)}: {getattr(e, 'problem', None) or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, not a {type(data).__name__}")
    return data


def _where(error) -> str:
    mark = getattr(error, "problem_mark", None)
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


def parse_assignments(pairs: Sequence[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` pairs -> {dotted key: value}. A value is read as a YAML scalar or flow collection, so
    `shard_size=64` is an int, `phonemes.text_norm=null` is None, `speech.splits=[train, valid]` a list and
    `visual.model_dir=/m/clip` a string; the config's validation then checks it like a value from the file."""
    import yaml

    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key or any(not part.isidentifier() for part in key.split(".")):
            raise ConfigError(f"--set {pair!r}: give KEY=VALUE with a dotted config key, e.g. --set shard_size=64 "
                              "or --set visual.batch_frames=32")
        if key in found:
            raise ConfigError(f"--set {key} is given twice")
        try:
            found[key] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {pair!r}: the value is not a YAML value: {getattr(e, 'problem', None) or e}"
                              ) from None
    return found


def load_config(cls, path: Optional[Path] = None, overrides: Optional[dict[str, Any]] = None,
                assignments: Optional[dict[str, Any]] = None):
    """Defaults <- YAML file <- overrides ({"visual.model_dir": ...}, from named options; None ones are skipped)
    <- assignments (`--set`, every value applied, null included). A key both a named option and `--set` give is
    refused: one command line, one value per key."""
    data = read_yaml(path) if path is not None else {}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    twice = sorted(given.keys() & (assignments or {}).keys())
    if twice:
        raise ConfigError(f"{twice[0]} is given twice: by its own option and by --set {twice[0]}=...; give it once")
    for dotted, value in [*given.items(), *(assignments or {}).items()]:
        set_path(data, dotted, value)
    return from_dict(cls, data)


def config_yaml(config: Any) -> str:
    """A config as the YAML a `--config` file holds (every key, defaults included): `--print-config`."""
    import yaml

    plain = json.loads(json.dumps(to_dict(config), default=str))   # tuples -> lists: plain YAML, no tags
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False, allow_unicode=True)


def config_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(to_dict(config), sort_keys=True, default=str).encode()).hexdigest()[:16]
