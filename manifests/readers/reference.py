"""The reference implementation's file lists: 7 pipe-delimited fields per line, of which only the audio path is
kept; the lists name no task, so the caller gives it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from manifests.readers.common import (
    check_item_id,
    check_split,
    check_unique,
    fail_on_lines,
    read_lines,
    relative_to_root,
    sanitize_clip_id,
)
from manifests.readers.reader import DATA_ROOT, DATASET, SET_FLAG, SPLIT, Reader, ReaderOption
from manifests.schema import Clip
from manifests.tasks import TASKS
from manifests.validate import ManifestError

REFERENCE_COLUMNS = ("audio_path", "clip_feature", "speaker_embedding", "lip_feature", "sync_feature",
                     "phone_ids", "phones")


def read_reference_list(list_path: str | Path, *, task: str, dataset: Optional[str] = None,
                        split: Optional[str] = None, video_pattern: Optional[str] = None,
                        data_root: str | Path | None = None) -> list[Clip]:
    """The reference implementation's pipe-delimited lists: 7 fields, no header:
    `audio path | clip feature | speaker embedding | lip feature | sync feature | phone ids | phones`.

    Only the audio path is kept (as audio_path; clip_id is its file stem, sanitised). The other fields are the
    reference's own precomputed features and phonemes, which this pipeline re-derives from media, and the lists
    carry no transcript text: speech rows come out with a null transcript unless one is added. The lists name no
    video either: `video_pattern` (e.g. "videos/{stem}.mp4") derives video_path from the audio stem; without it
    video_path is null. Absolute audio paths are made relative to data_root when it is given, else kept as written.
    """
    list_path, split = Path(list_path), check_split(split)
    if task not in TASKS:
        raise ManifestError(f"task {task!r} is not one of {', '.join(TASKS)}")
    clips, pairs, bad = [], [], []
    for lineno, line in enumerate(read_lines(list_path), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != len(REFERENCE_COLUMNS) or not fields[0].strip():
            bad.append(f"line {lineno} has {len(fields)} field(s)")
            continue
        audio = fields[0].strip()
        if "\x00" in audio:
            bad.append(f"line {lineno} audio path holds a NUL byte")
            continue
        audio_path = Path(audio)
        if data_root is not None and audio_path.is_absolute():
            audio = relative_to_root(audio_path, Path(data_root))
        video = None
        if video_pattern is not None:
            video = video_pattern.format(stem=audio_path.stem)
            check_item_id(video, f"{list_path} line {lineno}")
        clip_id = sanitize_clip_id(audio_path.stem)
        pairs.append((fields[0].strip(), clip_id))
        clips.append(Clip(clip_id=clip_id, task=task, dataset=dataset, split=split, audio_path=audio, video_path=video))
    fail_on_lines(list_path, bad, " | ".join(REFERENCE_COLUMNS))
    if not clips:
        raise ManifestError(f"{list_path} lists no clips")
    check_unique(pairs, list_path)
    return clips


READER = Reader(
    name="reference", read=read_reference_list,
    description="The reference implementation's pipe-delimited lists; give the task with --set task=... (any task)",
    options=(
        DATASET, SPLIT, DATA_ROOT,
        ReaderOption("video_pattern", "--pattern", "video path pattern from the audio stem, e.g. videos/{stem}.mp4"),
        ReaderOption("task", SET_FLAG, "the clips' task", required=True,
                     missing=f"reference lists need the task: --set task={'|'.join(TASKS)}"),
    ),
)
