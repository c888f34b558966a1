"""LibriTTS: `[SPLIT/]SPEAKER/CHAPTER/ID.wav` beside `ID.normalized.txt` (else `ID.original.txt`); task tts."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from manifests.readers.common import check_unique, read_text_or_none, relative_to_root, sanitize_clip_id
from manifests.readers.reader import DATA_ROOT, DATASET, SPLIT, Reader
from manifests.schema import Clip
from manifests.validate import MAX_LISTED, ManifestError

LIBRITTS_SPLIT = re.compile(r"^(train|dev|test)-")


def read_libritts(root: str | Path, *, dataset: str = "libritts", split: Optional[str] = None,
                  data_root: str | Path | None = None) -> list[Clip]:
    """LibriTTS layout: `[SPLIT/]SPEAKER/CHAPTER/ID.wav` with `ID.normalized.txt` (else `ID.original.txt`); task tts.

    root is either the corpus folder holding split folders (`train-clean-100/`, `dev-clean/`, ...) or one split
    folder. The split is the split folder's name unless `split` is given; the speaker is the SPEAKER folder.
    A wav at any other depth is a ManifestError (the layout is not what this reader understands); symlinked
    folders are not followed.
    """
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root} is not a folder: give the LibriTTS folder (or one split folder)")
    data_root = Path(data_root) if data_root is not None else root
    root_split = root.name if LIBRITTS_SPLIT.match(root.name) else None
    wavs: list[tuple[str, ...]] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        rel = Path(folder).relative_to(root).parts
        wavs.extend(rel + (name,) for name in sorted(files) if name.endswith(".wav"))
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
        transcript = read_text_or_none(wav.with_name(f"{stem}.normalized.txt"))
        if transcript is None:
            transcript = read_text_or_none(wav.with_name(f"{stem}.original.txt"))
        row_split = split if split is not None else (parts[0] if len(parts) == 4 else root_split)
        clip_id = sanitize_clip_id(stem)
        pairs.append(("/".join(parts), clip_id))
        clips.append(Clip(clip_id=clip_id, task="tts", dataset=dataset, split=row_split, speaker=parts[-3],
                          audio_path=relative_to_root(wav, data_root),
                          transcript=transcript.strip() if transcript is not None else None))
    check_unique(pairs, root)
    return clips


READER = Reader(
    name="libritts", read=read_libritts,
    description="LibriTTS folder (or one split folder): SPEAKER/CHAPTER/ID.wav with transcripts beside (tts)",
    options=(DATASET, SPLIT, DATA_ROOT),
)
