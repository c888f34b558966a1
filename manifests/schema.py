"""The manifest: one row per clip, saying where its media lives and what it is.

A manifest describes data; it never decodes media. Records are small frozen dataclasses that
serialise with `to_dict()`/`from_dict()`; tables are Parquet with `MANIFEST_SCHEMA`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import pyarrow as pa

from manifests.atomic import atomic_write_parquet

Seconds = float

SCHEMA_VERSION = 1
# RE2 (pyarrow) reads `$` as end of text; in Python use CLIP_ID_PATTERN.fullmatch (`$` also matches before "\n").
# A clip_id becomes the WebDataset key of its sample: one rule here, used by validation and by the shard writer.
# No dots (WebDataset splits member names at the first dot) and no leading "_" (reserved for __key__ and friends).
CLIP_ID_PATTERN = re.compile(r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,199}$")

MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("dataset", pa.string()),
        pa.field("split", pa.string()),
        pa.field("video_path", pa.string()),
        pa.field("audio_path", pa.string()),
        pa.field("transcript", pa.string()),
        pa.field("speaker", pa.string()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("speech_start_s", pa.float64()),
        pa.field("speech_end_s", pa.float64()),
    ],
    metadata={"vssflow.manifest.schema_version": str(SCHEMA_VERSION)},
)
REQUIRED_COLUMNS = ("clip_id", "task")


@dataclass(frozen=True, kw_only=True)
class Clip:
    """One manifest row. Paths are relative to the data root given at run time."""

    clip_id: str
    task: str
    dataset: Optional[str] = None
    split: Optional[str] = None
    video_path: Optional[str] = None
    audio_path: Optional[str] = None
    transcript: Optional[str] = None
    speaker: Optional[str] = None
    start_s: Optional[Seconds] = None
    end_s: Optional[Seconds] = None
    speech_start_s: Optional[Seconds] = None
    speech_end_s: Optional[Seconds] = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Clip":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def clips_to_table(clips: Iterable[Clip]) -> pa.Table:
    rows = [c.to_dict() for c in clips]
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def write_manifest(clips: Iterable[Clip] | pa.Table, path: str | Path) -> Path:
    """Write a manifest Parquet file (atomically: a reader never sees half of it)."""
    return atomic_write_parquet(path, clips if isinstance(clips, pa.Table) else clips_to_table(clips))
