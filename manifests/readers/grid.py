"""GRID: `SPEAKER/UTTERANCE.mpg` with word alignments (`start end word` in 1/25000 s); every clip is task visual_tts,
its transcript the aligned words, its timed words and speech span from them.

Alignments are found with a pattern: `SPEAKER/align/UTTERANCE.align` beside the videos, or, as the public release
lays them out, in their own folder `alignments/SPEAKER/UTTERANCE.align` (chosen when `alignments/` exists); any
other layout with `--align-pattern`. A build in which no clip has an alignment is an error naming the pattern."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from manifests.readers.common import Transcript, check_split, fail_on_lines, read_text_or_none
from manifests.readers.id_lists import clips_from_ids, read_id_list
from manifests.readers.reader import DATA_ROOT, DATASET, SPLIT, Corpus, Reader, ReaderOption
from manifests.schema import Clip, Word
from manifests.validate import ManifestError

GRID_ALIGN_UNITS_PER_S = 25_000.0  # GRID .align times count 1000 units per 25 fps video frame
GRID_SILENCES = frozenset({"sil", "sp"})
ALIGN_BESIDE = "{speaker}/align/{utterance}.align"
ALIGN_RELEASE = "alignments/{speaker}/{utterance}.align"  # the public release: alignments in their own folder


def grid_align_transcript(path: Path) -> Optional[Transcript]:
    """A GRID `.align` file: lines `start end word` in 1/25000 s; `sil`/`sp` are dropped from the text and the speech
    span runs from the first word's start to the last word's end. None when the file does not exist."""
    content = read_text_or_none(path)
    if content is None:
        return None
    words, bad = [], []
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
            words.append(Word(fields[2], start / GRID_ALIGN_UNITS_PER_S, end / GRID_ALIGN_UNITS_PER_S))
    fail_on_lines(path, bad, "'start end word'")
    if not words:
        return Transcript(text="")
    return Transcript(text=" ".join(w.word for w in words), speech_start_s=words[0].start_s,
                      speech_end_s=words[-1].end_s, words=tuple(words))


def read_grid(root: str | Path, *, list_path: str | Path | None = None, dataset: str = "grid",
              split: Optional[str] = None, video_ext: str = ".mpg",
              align_pattern: Optional[str] = None, data_root: str | Path | None = None) -> list[Clip]:
    """GRID layout: `root/SPEAKER/UTTERANCE{video_ext}` with alignments at `root/{align_pattern}`; task visual_tts.

    The clips are those of `list_path` (`s1/bbaf2n` per line) or, without one, every `root/*/*{video_ext}`.
    The transcript is the alignment's words without `sil`/`sp`, the speech span runs from the first word to the
    last, and the speaker is the first path component. align_pattern (fields {speaker}, {utterance}) defaults to
    the release layout `alignments/{speaker}/{utterance}.align` when `root/alignments` exists, else
    `{speaker}/align/{utterance}.align`. GRID has no official split: `split` sets one for every clip.
    """
    root = Path(root)
    split = check_split(split)
    if align_pattern is None:
        align_pattern = ALIGN_RELEASE if (root / "alignments").is_dir() else ALIGN_BESIDE
    _check_pattern(align_pattern)
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

    clips = clips_from_ids(items, media_root=root, data_root=data_root, dataset=dataset, split=split,
                           video_ext=video_ext, transcript_fn=transcript_fn,
                           speaker_fn=lambda item_id: item_id.split("/")[0], source=source)
    if all(c.transcript is None for c in clips):
        raise ManifestError(f"no alignment found for any of the {len(clips)} clip(s) under {root}/{align_pattern}: "
                            f"give --align-pattern (the release keeps them at {ALIGN_RELEASE}, others beside the "
                            f"videos at {ALIGN_BESIDE})")
    return clips


def _check_pattern(pattern: str) -> None:
    try:
        pattern.format(speaker="s1", utterance="bbaf2n")
    except (KeyError, IndexError, ValueError) as e:
        raise ManifestError(f"align pattern {pattern!r} is not usable ({type(e).__name__}: {e}); its fields are "
                            "{speaker} and {utterance}") from None


CORPUS = Corpus(licence="CC BY 4.0", hf_licence="cc-by-4.0", homepage="https://spandh.dcs.shef.ac.uk/gridcorpus/")

READER = Reader(
    name="grid", read=read_grid,
    description="GRID folder: SPEAKER/UTTERANCE.mpg with alignments (release layout or beside) (visual_tts)",
    options=(
        DATASET, SPLIT, DATA_ROOT,
        ReaderOption("video_ext", "--video-ext", "video file extension (default .mpg)"),
        ReaderOption("list_path", "--list", "list of SPEAKER/UTTERANCE ids to take", kind="path"),
        ReaderOption("align_pattern", "--align-pattern",
                     f"alignment path under the corpus folder (default {ALIGN_RELEASE} when alignments/ exists, "
                     f"else {ALIGN_BESIDE})"),
    ),
    corpus=CORPUS,
)
