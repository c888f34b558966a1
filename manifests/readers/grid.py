"""GRID: `SPEAKER/UTTERANCE.mpg` with word alignments (`start end word` in 1/25000 s); every clip is task visual_tts,
its transcript the aligned words and its speech span from the first word to the last."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from manifests.readers.common import Transcript, fail_on_lines, read_text_or_none
from manifests.readers.id_lists import clips_from_ids, read_id_list
from manifests.readers.reader import DATA_ROOT, DATASET, SPLIT, Reader, ReaderOption
from manifests.schema import Clip
from manifests.validate import ManifestError

GRID_ALIGN_UNITS_PER_S = 25_000.0  # GRID .align times count 1000 units per 25 fps video frame
GRID_SILENCES = frozenset({"sil", "sp"})


def grid_align_transcript(path: Path) -> Optional[Transcript]:
    """A GRID `.align` file: lines `start end word` in 1/25000 s; `sil`/`sp` are dropped from the text and the speech
    span runs from the first word's start to the last word's end. None when the file does not exist."""
    content = read_text_or_none(path)
    if content is None:
        return None
    words, spans, bad = [], [], []
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            start, end = int(fields[0]), int(fields[1])
            if len(fields) != 3:
                raise ValueError
        except (ValueError, IndexError):
            bad.append(f"line {lineno}: {line[:80]!r}")
            continue
        if fields[2].lower() not in GRID_SILENCES:
            words.append(fields[2])
            spans.append((start, end))
    fail_on_lines(path, bad, "'start end word'")
    if not words:
        return Transcript(text="")
    return Transcript(text=" ".join(words), speech_start_s=spans[0][0] / GRID_ALIGN_UNITS_PER_S,
                      speech_end_s=spans[-1][1] / GRID_ALIGN_UNITS_PER_S)


def read_grid(root: str | Path, *, list_path: str | Path | None = None, dataset: str = "grid",
              split: Optional[str] = None, video_ext: str = ".mpg",
              align_pattern: str = "{speaker}/align/{utterance}.align",
              data_root: str | Path | None = None) -> list[Clip]:
    """GRID layout: `root/SPEAKER/UTTERANCE{video_ext}` with alignments at `root/{align_pattern}`; task visual_tts.

    The clips are those of `list_path` (`s1/bbaf2n` per line) or, without one, every `root/*/*{video_ext}`.
    The transcript is the alignment's words without `sil`/`sp`, the speech span runs from the first word to the
    last, and the speaker is the first path component. The official release keeps alignments apart: pass
    `align_pattern="alignments/{speaker}/{utterance}.align"`.
    """
    root = Path(root)
    data_root = Path(data_root) if data_root is not None else root
    if list_path is not None:
        list_path = Path(list_path)
        items = [(f"{list_path} line {lineno}", item_id) for lineno, item_id in read_id_list(list_path)]
        source = list_path
    else:
        if not root.is_dir():
            raise ManifestError(f"{root} is not a folder: give the GRID folder holding one folder per speaker")
        videos = sorted(p.relative_to(root).as_posix() for p in root.glob(f"*/*{video_ext}"))
        if not videos:
            raise ManifestError(f"no {video_ext} files under {root}: expected SPEAKER/UTTERANCE{video_ext}")
        items = [(str(root / v), v[: -len(video_ext)]) for v in videos]
        source = root

    def transcript_fn(_media_root: Path, item_id: str) -> Optional[Transcript]:
        speaker, _, utterance = item_id.partition("/")
        return grid_align_transcript(root / align_pattern.format(speaker=speaker, utterance=utterance))

    return clips_from_ids(items, media_root=root, data_root=data_root, dataset=dataset, split=split,
                          video_ext=video_ext, transcript_fn=transcript_fn,
                          speaker_fn=lambda item_id: item_id.split("/")[0], source=source)


READER = Reader(
    name="grid", read=read_grid,
    description="GRID folder: SPEAKER/UTTERANCE.mpg with SPEAKER/align/UTTERANCE.align (visual_tts)",
    options=(
        DATASET, SPLIT, DATA_ROOT,
        ReaderOption("video_ext", "--video-ext", "video file extension (default .mpg)"),
        ReaderOption("list_path", "--list", "list of SPEAKER/UTTERANCE ids to take", kind="path"),
    ),
)
