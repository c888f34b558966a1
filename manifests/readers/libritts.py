"""LibriTTS: `[SUBSET/]SPEAKER/CHAPTER/ID.wav` beside `ID.normalized.txt` (else `ID.original.txt`); task tts.
Subsets map to canonical splits: train-* -> train, dev-* -> valid, test-* -> test; the folder name is the subset."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from manifests.readers.common import (
    check_split,
    check_unique,
    read_transcript_file,
    relative_to_root,
    sanitize_clip_id,
)
from manifests.readers.reader import DATA_ROOT, DATASET, SPLIT, Corpus, Reader
from manifests.schema import Clip
from manifests.validate import MAX_LISTED, ManifestError

LIBRITTS_SUBSET = re.compile(r"^(train|dev|test)-")
LIBRITTS_SPLITS = {"train": "train", "dev": "valid", "test": "test"}


def libritts_split(subset: Optional[str]) -> Optional[str]:
    """'train-clean-100' -> train, 'dev-other' -> valid, 'test-clean' -> test; None for another name."""
    match = LIBRITTS_SUBSET.match(subset or "")
    return LIBRITTS_SPLITS[match.group(1)] if match else None


def read_libritts(root: str | Path, *, dataset: str = "libritts", split: Optional[str] = None,
                  data_root: str | Path | None = None) -> list[Clip]:
    """LibriTTS layout: `[SPLIT/]SPEAKER/CHAPTER/ID.wav` with `ID.normalized.txt` (else `ID.original.txt`); task tts.

    root is either the corpus folder holding subset folders (`train-clean-100/`, `dev-clean/`, ...) or one subset
    folder. The subset is that folder's name and the split its canonical split, unless `split` (train, valid or
    test) is given; the speaker is the SPEAKER folder. A wav at any other depth is a ManifestError (the layout is
    not what this reader understands); symlinked folders are not followed. macOS resource forks (`._*`, found in
    copies made on a Mac) are skipped. A transcript that is not valid UTF-8 keeps its row with a null transcript
    and the reason in transcript_problem (extract rejects it: `unreadable_transcript`).
    """
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root} is not a folder: give the LibriTTS folder (or one split folder)")
    data_root = Path(data_root) if data_root is not None else root
    split = check_split(split)
    root_subset = root.name if LIBRITTS_SUBSET.match(root.name) else None
    wavs: list[tuple[str, ...]] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        rel = Path(folder).relative_to(root).parts
        wavs.extend(rel + (name,) for name in sorted(files) if name.endswith(".wav") and not name.startswith("._"))
    bad = ["/".join(parts) for parts in wavs if len(parts) not in (3, 4)]
    if bad:
        raise ManifestError(f"{root}: {len(bad)} wav file(s) outside the LibriTTS layout "
                            f"[SPLIT/]SPEAKER/CHAPTER/ID.wav: {', '.join(bad[:MAX_LISTED])}")
    if not wavs:
        raise ManifestError(f"no wav files under {root}: expected [SPLIT/]SPEAKER/CHAPTER/ID.wav")
    clips, pairs = [], []
    for parts in wavs:
        wav = root.joinpath(*parts)
        stem = wav.name[: -len(".wav")]
        transcript, problem = read_transcript_file(wav.with_name(f"{stem}.normalized.txt"))
        if transcript is None and problem is None:
            transcript, problem = read_transcript_file(wav.with_name(f"{stem}.original.txt"))
        subset = parts[0] if len(parts) == 4 else root_subset
        clip_id = sanitize_clip_id(stem)
        pairs.append(("/".join(parts), clip_id))
        clips.append(Clip(clip_id=clip_id, task="tts", dataset=dataset, subset=subset,
                          split=split if split is not None else libritts_split(subset), speaker=parts[-3],
                          audio_path=relative_to_root(wav, data_root), transcript_problem=problem,
                          transcript=transcript.strip() if transcript is not None else None))
    check_unique(pairs, root)
    return clips


CORPUS = Corpus(licence="CC BY 4.0", hf_licence="cc-by-4.0", homepage="https://www.openslr.org/60/")

READER = Reader(
    name="libritts", read=read_libritts,
    description="LibriTTS folder (or one split folder): SPEAKER/CHAPTER/ID.wav with transcripts beside (tts)",
    options=(DATASET, SPLIT, DATA_ROOT),
    corpus=CORPUS,
)
