"""VGGSound: the official csv (`youtube_id,start_seconds,label,split`, no header; labels holding commas are quoted)
and a folder of the pre-cut 10 s clips; every clip is task v2s and keeps its label (synth-mix filters on it)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from manifests.readers.common import (
    check_item_id,
    check_unique,
    fail_on_lines,
    relative_to_root,
    sanitize_clip_id,
)
from manifests.readers.reader import DATA_ROOT, DATASET, SPLIT, Corpus, Reader, ReaderOption
from manifests.schema import Clip
from manifests.splits import canonical_split
from manifests.validate import ManifestError

FILENAME_FIELDS = "{youtube_id} and {start} (an int: {start:06d})"


def check_filename_pattern(pattern: str) -> None:
    """A ManifestError naming the usable fields when the pattern names another field or is malformed."""
    try:
        pattern.format(youtube_id="abc", start=0)
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        raise ManifestError(f"file name pattern {pattern!r} is not usable ({type(e).__name__}: {e}); its fields are "
                            f"{FILENAME_FIELDS}") from None


def read_vggsound(csv_path: str | Path, *, video_dir: str | Path, dataset: str = "vggsound",
                  split: Optional[str] = None, filename_pattern: str = "{youtube_id}_{start:06d}.mp4",
                  data_root: str | Path | None = None) -> list[Clip]:
    """VGGSound csv: rows `youtube_id,start_seconds,label,split`, no header; task v2s.

    The video is `video_dir/filename_pattern` (formatted with youtube_id and start, an int). The clips are the
    pre-cut 10 s files, so start_s/end_s stay null. The label is kept as written. The csv's split ("train",
    "test") is the subset and maps to the canonical split; `split` keeps only the rows of that split (given as
    either name; default: all rows). clip_id is `{youtube_id}_{start:06d}`.
    """
    csv_path, video_dir = Path(csv_path), Path(video_dir)
    check_filename_pattern(filename_pattern)
    data_root = Path(data_root) if data_root is not None else video_dir
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(enumerate(csv.reader(f), start=1))
    except FileNotFoundError as e:
        raise ManifestError(f"{csv_path} does not exist") from e
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"cannot read {csv_path} as a UTF-8 csv ({type(e).__name__}: {e})") from e
    clips, pairs, bad = [], [], []
    for lineno, row in rows:
        if not row or not "".join(row).strip():
            continue
        if lineno == 1 and len(row) > 1 and row[1].strip().lower() in ("start_seconds", "start", "start_s"):
            continue  # a header line, although the official csv has none
        if len(row) != 4:
            bad.append(f"line {lineno} has {len(row)} field(s)")
            continue
        youtube_id, start_text, label, subset = (field.strip() for field in row)
        try:
            start = int(start_text)
        except ValueError:
            bad.append(f"line {lineno} start_seconds {start_text!r} is not an integer")
            continue
        if not youtube_id or start < 0:
            bad.append(f"line {lineno} has an empty youtube_id or a negative start")
            continue
        row_split = canonical_split(subset)
        if subset and row_split is None:
            bad.append(f"line {lineno} split {subset!r} is not train, test or a name that maps to them")
            continue
        if split is not None and split not in (subset, row_split):
            continue
        filename = filename_pattern.format(youtube_id=youtube_id, start=start)
        check_item_id(filename, f"{csv_path} line {lineno}")
        clip_id = sanitize_clip_id(f"{youtube_id}_{start:06d}")
        pairs.append((f"{youtube_id},{start}", clip_id))
        clips.append(Clip(clip_id=clip_id, task="v2s", dataset=dataset, split=row_split, subset=subset or None,
                          label=label or None, video_path=relative_to_root(video_dir / filename, data_root)))
    fail_on_lines(csv_path, bad, "youtube_id,start_seconds,label,split")
    check_unique(pairs, csv_path)
    return clips


CORPUS = Corpus(licence="CC BY 4.0 for the annotations; the clips are YouTube videos under their uploaders' terms",
                hf_licence="other", homepage="https://www.robots.ox.ac.uk/~vgg/data/vggsound/")

READER = Reader(
    name="vggsound", read=read_vggsound, description="VGGSound csv and a folder of its pre-cut clips (v2s)",
    options=(
        DATASET, SPLIT, DATA_ROOT,
        ReaderOption("video_dir", "--video-dir", "folder of the pre-cut clips", kind="path", required=True),
        ReaderOption("filename_pattern", "--pattern",
                     "video file name pattern (default {youtube_id}_{start:06d}.mp4)"),
    ),
    corpus=CORPUS,
)
