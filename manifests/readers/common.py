"""What every corpus reader shares: corpus ids as clip_ids, media paths relative to the data root, text files read
strictly, malformed lines reported together, and `--set` defaults filling empty cells."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

import pyarrow as pa
import pyarrow.compute as pc

from manifests.schema import CLIP_ID_PATTERN, MANIFEST_SCHEMA, Word
from manifests.splits import SPLITS, canonical_split
from manifests.validate import MAX_LISTED, ManifestError


@dataclass(frozen=True)
class Transcript:
    """What a transcript file says: the text, and the span of speech in the clip and the timed words when the file
    knows them."""

    text: str
    speech_start_s: Optional[float] = None
    speech_end_s: Optional[float] = None
    words: Optional[tuple[Word, ...]] = None


# A transcript_fn gets (media_root, item_id) and returns the text, a Transcript, or None when there is none.
TranscriptFn = Callable[[Path, str], Union[str, Transcript, None]]


# ------------------------------------------------------------------------------------------------ ids, paths


def sanitize_clip_id(raw: str) -> str:
    """A corpus id as a clip_id: every character outside [A-Za-z0-9_-] becomes '_' ('LJ001.0001' -> 'LJ001_0001')."""
    clip_id = re.sub(r"[^A-Za-z0-9_-]", "_", raw)
    if not CLIP_ID_PATTERN.fullmatch(clip_id):
        raise ManifestError(f"id {raw!r} cannot become a clip_id (empty, or longer than 200 characters)")
    return clip_id


def check_unique(pairs: Iterable[tuple[str, str]], source: Path | str) -> None:
    """pairs of (corpus id, clip_id): raise when different corpus ids share one clip_id."""
    first: dict[str, str] = {}
    clashes: list[str] = []
    for raw, clip_id in pairs:
        if clip_id in first:
            clashes.append(f"{first[clip_id]!r} and {raw!r} -> {clip_id!r}")
        else:
            first[clip_id] = raw
    if clashes:
        listed = "; ".join(clashes[:MAX_LISTED]) + (f" (and {len(clashes) - MAX_LISTED} more)"
                                                    if len(clashes) > MAX_LISTED else "")
        raise ManifestError(f"{source}: {len(clashes)} id(s) collide once sanitised to clip_ids: {listed}. "
                            "Rename the files, or use `pipeline manifest build table` with your own clip_id column.")


def relative_to_root(path: Path, data_root: Path) -> str:
    """path relative to data_root, as a POSIX string; `..` is collapsed lexically (symlinks are left alone)."""
    absolute, base = Path(os.path.abspath(path)), Path(os.path.abspath(data_root))
    if not absolute.is_relative_to(base):
        raise ManifestError(f"{path} is not under the data root {data_root}: give a data root that holds the corpus")
    return absolute.relative_to(base).as_posix()


def check_item_id(item_id: str, where: str) -> None:
    """A corpus id used to build a file path must be a plain relative path: no '..', no absolute, no NUL."""
    parts = item_id.replace("\\", "/").split("/")
    if "\x00" in item_id or item_id.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"{where}: id {item_id!r} is not a plain relative name (no '..', '/' at the start, "
                            "empty parts or NUL): fix the list")


# ------------------------------------------------------------------------------------------------ text files


def read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise ManifestError(f"{path} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read {path} as UTF-8 text ({type(e).__name__}: {e})") from e


def fail_on_lines(path: Path, bad: list[str], expected: str) -> None:
    """Raise one ManifestError naming every malformed line (the first MAX_LISTED of them) when there is any."""
    if bad:
        listed = "; ".join(bad[:MAX_LISTED]) + (f" (and {len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else "")
        raise ManifestError(f"{path}: {len(bad)} malformed line(s), expected {expected}: {listed}")


def read_text_or_none(path: Path) -> Optional[str]:
    """A transcript file's text, or None when it does not exist (the row is kept with a null transcript)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read transcript {path} as UTF-8 text ({type(e).__name__}: {e})") from e


def read_transcript_file(path: Path) -> tuple[Optional[str], Optional[str]]:
    """(text, None), (None, None) when the file does not exist, or (None, problem) when it exists but cannot be
    read as UTF-8 text: the clip is kept and extract rejects it with the problem, the build goes on."""
    try:
        return path.read_text(encoding="utf-8"), None
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError as e:
        return None, f"{path.name} is not valid UTF-8 (byte {e.start}: {e.reason})"
    except OSError as e:
        return None, f"{path.name} cannot be read ({type(e).__name__}: {e})"


def check_split(split: Optional[str]) -> Optional[str]:
    """A split given to a reader (`--split`) as its canonical name ('dev' -> valid); a ManifestError for others."""
    if split is None:
        return None
    canonical = split if split in SPLITS else canonical_split(split)
    if canonical is None:
        raise ManifestError(f"split {split!r} is not one of {', '.join(SPLITS)} (nor a name that maps to one, like "
                            "dev-clean or val): splits are canonical, the corpus's own names go in subset")
    return canonical


# ----------------------------------------------------------------------------------------------- defaults


def apply_defaults(table: pa.Table, defaults: dict[str, Any] | None) -> pa.Table:
    """Fill nulls of the named columns with constants (text is cast to the column's type, e.g. '1.5' -> 1.5)."""
    if not defaults:
        return table
    check_columns(defaults, "defaults")
    for name, value in defaults.items():
        field = MANIFEST_SCHEMA.field(name)
        try:
            scalar = pa.scalar(value).cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise ManifestError(f"default {name}={value!r} cannot be read as {field.type} ({e})") from e
        table = table.set_column(table.schema.get_field_index(name), field, pc.fill_null(table[name], scalar))
    return table


def check_columns(names: Iterable[str], what: str) -> None:
    """Raise when `what` (a mapping, the defaults) names a column the manifest does not have."""
    unknown = sorted(set(names) - set(MANIFEST_SCHEMA.names))
    if unknown:
        raise ManifestError(f"{what} names column(s) {', '.join(unknown)} that the manifest does not have "
                            f"(columns: {', '.join(MANIFEST_SCHEMA.names)})")
