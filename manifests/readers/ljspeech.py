"""LJSpeech: `metadata.csv` (pipe-delimited, no header) and `wavs/ID.wav`; every clip is task tts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from manifests.readers.common import (
    check_split,
    check_unique,
    fail_on_lines,
    read_lines,
    relative_to_root,
    sanitize_clip_id,
)
from manifests.readers.reader import DATA_ROOT, DATASET, SPLIT, Corpus, Reader
from manifests.schema import Clip


def read_ljspeech(root: str | Path, *, dataset: str = "ljspeech", split: Optional[str] = None,
                  text: str = "normalized", data_root: str | Path | None = None) -> list[Clip]:
    """LJSpeech layout: `root/metadata.csv` and `root/wavs/ID.wav`; task tts.

    metadata.csv is pipe-delimited without header or quoting: `ID|transcript|normalized transcript`
    (`text="raw"` takes the second field; lines with only `ID|transcript` use it either way).
    """
    root, split = Path(root), check_split(split)
    if text not in ("normalized", "raw"):
        raise ValueError(f"text must be 'normalized' or 'raw', not {text!r}")
    metadata = root / "metadata.csv"
    data_root = Path(data_root) if data_root is not None else root
    clips, pairs, bad = [], [], []
    for lineno, line in enumerate(read_lines(metadata), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) not in (2, 3) or not fields[0].strip():
            bad.append(f"line {lineno} has {len(fields)} field(s)")
            continue
        item_id = fields[0].strip()
        if "/" in item_id or "\\" in item_id or item_id in (".", ".."):
            bad.append(f"line {lineno} id {item_id!r} is not a file name")
            continue
        transcript = fields[2] if text == "normalized" and len(fields) == 3 and fields[2].strip() else fields[1]
        clip_id = sanitize_clip_id(item_id)
        pairs.append((item_id, clip_id))
        clips.append(Clip(clip_id=clip_id, task="tts", dataset=dataset, split=split,
                          audio_path=relative_to_root(root / "wavs" / f"{item_id}.wav", data_root),
                          transcript=transcript.strip()))
    fail_on_lines(metadata, bad, "ID|transcript|normalized transcript")
    check_unique(pairs, metadata)
    return clips


CORPUS = Corpus(licence="public domain (as the LJ Speech release states)", hf_licence="other",
                homepage="https://keithito.com/LJ-Speech-Dataset/")

READER = Reader(
    name="ljspeech", read=read_ljspeech, description="LJSpeech folder: metadata.csv and wavs/ID.wav (tts)",
    options=(DATASET, SPLIT, DATA_ROOT),
    corpus=CORPUS,
)
