"""Talking-face corpora given as a list of ids (LRS2, GRID): one visual_tts clip per id, its video at
`media_root/{id}{video_ext}` and its transcript found by a per-corpus function."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from manifests.readers.common import (
    Transcript,
    TranscriptFn,
    check_item_id,
    check_unique,
    read_lines,
    relative_to_root,
    sanitize_clip_id,
)
from manifests.schema import Clip
from manifests.validate import ManifestError


def read_id_list(list_path: Path) -> list[tuple[int, str]]:
    """(line number, id) from a list file: first token per line; blank lines and '#' comments skipped."""
    items = []
    for lineno, line in enumerate(read_lines(list_path), start=1):
        tokens = line.split()
        if tokens and not tokens[0].startswith("#"):
            items.append((lineno, tokens[0]))
    if not items:
        raise ManifestError(f"{list_path} lists no clips")
    return items


def clips_from_ids(items: list[tuple[str, str]], *, media_root: Path, data_root: Path, dataset: str,
                   split: Optional[str], video_ext: str, transcript_fn: TranscriptFn,
                   speaker_fn: Optional[Callable[[str], Optional[str]]], source: Path,
                   subset: Optional[str] = None) -> list[Clip]:
    """items: (where, id) pairs; one visual_tts clip per id with video `media_root/{id}{video_ext}`."""
    clips, pairs = [], []
    for where, item_id in items:
        check_item_id(item_id, where)
        found = transcript_fn(media_root, item_id)
        transcript = found if isinstance(found, Transcript) else Transcript(found) if found is not None else None
        clip_id = sanitize_clip_id(item_id)
        pairs.append((item_id, clip_id))
        clips.append(Clip(
            clip_id=clip_id, task="visual_tts", dataset=dataset, split=split, subset=subset,
            video_path=relative_to_root(media_root / f"{item_id}{video_ext}", data_root),
            transcript=transcript.text if transcript is not None else None,
            speaker=speaker_fn(item_id) if speaker_fn is not None else None,
            speech_start_s=transcript.speech_start_s if transcript is not None else None,
            speech_end_s=transcript.speech_end_s if transcript is not None else None,
            words=transcript.words if transcript is not None else None,
        ))
    check_unique(pairs, source)
    return clips
