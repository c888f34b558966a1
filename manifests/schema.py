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

SCHEMA_VERSION = 2  # 2 added subset, label, parent_id, words, transcript_problem; a version-1 file reads as nulls
# RE2 (pyarrow) reads `$` as end of text; in Python use CLIP_ID_PATTERN.fullmatch (`$` also matches before "\n").
# A clip_id becomes the WebDataset key of its sample: one rule here, used by validation and by the shard writer.
# No dots (WebDataset splits member names at the first dot) and no leading "_" (reserved for __key__ and friends).
CLIP_ID_PATTERN = re.compile(r"^[A-Za-z0-9-][A-Za-z0-9_-]{0,199}$")

WORD_TYPE = pa.struct([pa.field("word", pa.string()), pa.field("start_s", pa.float64()),
                       pa.field("end_s", pa.float64())])
WORDS_TYPE = pa.list_(WORD_TYPE)

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
        pa.field("subset", pa.string()),
        pa.field("label", pa.string()),
        pa.field("parent_id", pa.string()),
        pa.field("words", WORDS_TYPE),
        pa.field("transcript_problem", pa.string()),
    ],
    metadata={"vssflow.manifest.schema_version": str(SCHEMA_VERSION)},
)
REQUIRED_COLUMNS = ("clip_id", "task")


@dataclass(frozen=True)
class Word:
    """One timed word of a transcript, in seconds on the media file's own timeline."""

    word: str
    start_s: Seconds
    end_s: Seconds


@dataclass(frozen=True, kw_only=True)
class Clip:
    """One manifest row. Paths are relative to the data root given at run time.

    split is canonical (`manifests.splits.SPLITS`: train, valid, test); subset is the corpus's own name for the part
    the clip comes from ("test-clean", "pretrain"). label is the corpus's class label (VGGSound). A clip cut out of a
    longer one names it in parent_id. words are the transcript's timed words when the corpus has them.
    transcript_problem says why a transcript that exists could not be read (the clip is then rejected by extract).
    """

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
    subset: Optional[str] = None
    label: Optional[str] = None
    parent_id: Optional[str] = None
    words: Optional[tuple[Word, ...]] = None
    transcript_problem: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["words"] = None if self.words is None else [dataclasses.asdict(w) for w in self.words]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Clip":
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in data.items() if k in names}
        if kept.get("words") is not None:
            kept["words"] = tuple(w if isinstance(w, Word) else Word(**w) for w in kept["words"])
        return cls(**kept)


def clips_to_table(clips: Iterable[Clip]) -> pa.Table:
    rows = [c.to_dict() for c in clips]
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def write_manifest(clips: Iterable[Clip] | pa.Table, path: str | Path) -> Path:
    """Write a manifest Parquet file (atomically: a reader never sees half of it)."""
    return atomic_write_parquet(path, clips if isinstance(clips, pa.Table) else clips_to_table(clips))
