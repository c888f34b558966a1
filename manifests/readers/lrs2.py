"""LRS2 (and LRS3-style lists): a list of `VIDEO/UTTERANCE` ids, each with `{id}.mp4` and a `{id}.txt` whose first
line is `Text:  WORDS`; every clip is task visual_tts."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from manifests.readers.common import TranscriptFn, read_text_or_none
from manifests.readers.id_lists import clips_from_ids, read_id_list
from manifests.readers.reader import DATA_ROOT, DATASET, SPLIT, Reader, ReaderOption
from manifests.schema import Clip
from manifests.validate import ManifestError

LRS2_SPLITS = ("pretrain", "train", "val", "test")


def lrs2_transcript(media_root: Path, item_id: str) -> Optional[str]:
    """LRS2/LRS3 `{item_id}.txt`: the first line is `Text:  WORDS`. None when the file does not exist."""
    path = media_root / f"{item_id}.txt"
    content = read_text_or_none(path)
    if content is None:
        return None
    first = content.splitlines()[0] if content.strip() else ""
    if not first.startswith("Text:"):
        raise ManifestError(f"{path}: first line should start with 'Text:', found {first[:80]!r}")
    return first[len("Text:"):].strip()


def read_lrs2_list(list_path: str | Path, *, media_root: str | Path, dataset: str = "lrs2",
                   split: Optional[str] = None, video_ext: str = ".mp4",
                   transcript_fn: TranscriptFn = lrs2_transcript,
                   speaker_fn: Optional[Callable[[str], Optional[str]]] = None,
                   data_root: str | Path | None = None) -> list[Clip]:
    """LRS2-style list (`5535415699068794046/00001` per line, extra tokens ignored); task visual_tts.

    The video is `media_root/{id}{video_ext}`, the transcript `transcript_fn(media_root, id)` (default: the first
    line `Text:  WORDS` of `media_root/{id}.txt`). LRS2 has no speaker ids; `speaker_fn(id)` can supply them.
    split defaults to the list's name when it is an LRS2 list (pretrain/train/val/test.txt).
    """
    list_path, media_root = Path(list_path), Path(media_root)
    data_root = Path(data_root) if data_root is not None else media_root
    if split is None and list_path.stem in LRS2_SPLITS:
        split = list_path.stem
    items = [(f"{list_path} line {lineno}", item_id) for lineno, item_id in read_id_list(list_path)]
    return clips_from_ids(items, media_root=media_root, data_root=data_root, dataset=dataset, split=split,
                          video_ext=video_ext, transcript_fn=transcript_fn, speaker_fn=speaker_fn, source=list_path)


READER = Reader(
    name="lrs2", read=read_lrs2_list,
    description="LRS2-style list of VIDEO/UTTERANCE ids under a media root (visual_tts)",
    options=(
        DATASET, SPLIT, DATA_ROOT,
        ReaderOption("media_root", "--media-root", "folder the list's ids are relative to", kind="path",
                     required=True),
        ReaderOption("video_ext", "--video-ext", "video file extension (default .mp4)"),
    ),
)
