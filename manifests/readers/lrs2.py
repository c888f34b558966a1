"""LRS2 (and LRS3-style lists): a list of `VIDEO/UTTERANCE` ids, each with `{id}.mp4` and a `{id}.txt` whose first
line is `Text:  WORDS`, followed in the pretrain set (and LRS3) by a `WORD START END ASDSCORE` table of word timings;
every clip is task visual_tts. Clips whose words run past `max_seconds` are cut at word boundaries
(`manifests.readers.words`), so no clip keeps words its audio does not hold."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from manifests.readers.common import Transcript, TranscriptFn, check_split, read_text_or_none
from manifests.readers.id_lists import clips_from_ids, read_id_list
from manifests.readers.reader import DATA_ROOT, DATASET, SPLIT, Corpus, Reader, ReaderOption
from manifests.readers.words import DEFAULT_MAX_SECONDS, split_clip
from manifests.schema import Clip, Word
from manifests.validate import ManifestError

LRS2_SPLITS = {"pretrain": "train", "train": "train", "val": "valid", "test": "test"}  # list name -> split
WORD_TABLE_HEADER = ("WORD", "START", "END")


def _word_table(path: Path, lines: list[str]) -> Optional[tuple[Word, ...]]:
    """The `WORD START END ASDSCORE` table after the header line, or None when the file has none."""
    header = next((i for i, line in enumerate(lines) if tuple(line.split()[:3]) == WORD_TABLE_HEADER), None)
    if header is None:
        return None
    words = []
    for lineno, line in enumerate(lines[header + 1:], start=header + 2):
        fields = line.split()
        if not fields:
            continue
        try:
            start, end = float(fields[1]), float(fields[2])
        except (IndexError, ValueError):
            raise ManifestError(f"{path} line {lineno}: expected 'WORD START END [SCORE]', "
                                f"found {line[:80]!r}") from None
        if not 0 <= start <= end:
            raise ManifestError(f"{path} line {lineno}: word times {start} .. {end} are not ordered")
        words.append(Word(fields[0], start, end))
    return tuple(words) or None


def lrs2_transcript(media_root: Path, item_id: str) -> Optional[Transcript]:
    """LRS2/LRS3 `{item_id}.txt`: the first line is `Text:  WORDS`, then maybe a word-timing table (seconds from the
    clip's start). None when the file does not exist."""
    path = media_root / f"{item_id}.txt"
    content = read_text_or_none(path)
    if content is None:
        return None
    lines = content.splitlines()
    first = lines[0] if content.strip() else ""
    if not first.startswith("Text:"):
        raise ManifestError(f"{path}: first line should start with 'Text:', found {first[:80]!r}")
    return Transcript(text=first[len("Text:"):].strip(), words=_word_table(path, lines))


def read_lrs2_list(list_path: str | Path, *, media_root: str | Path, dataset: str = "lrs2",
                   split: Optional[str] = None, video_ext: str = ".mp4",
                   transcript_fn: TranscriptFn = lrs2_transcript,
                   speaker_fn: Optional[Callable[[str], Optional[str]]] = None,
                   data_root: str | Path | None = None, max_seconds: float | str = DEFAULT_MAX_SECONDS) -> list[Clip]:
    """LRS2-style list (`5535415699068794046/00001` per line, extra tokens ignored); task visual_tts.

    The video is `media_root/{id}{video_ext}`, the transcript `transcript_fn(media_root, id)` (default: the first
    line `Text:  WORDS` of `media_root/{id}.txt` and its word timings). LRS2 has no speaker ids; `speaker_fn(id)` can
    supply them. The subset is the list's name (pretrain/train/val/test) and the split its canonical split
    (pretrain and train -> train, val -> valid) unless `split` is given. A clip with word timings gets its speech
    span from them; one whose words end past max_seconds (extract's decode.max_seconds) becomes pieces cut at word
    boundaries, each with its own clip_id, text, span and trim window and parent_id naming the clip.
    """
    list_path, media_root = Path(list_path), Path(media_root)
    data_root = Path(data_root) if data_root is not None else media_root
    subset = list_path.stem if list_path.stem in LRS2_SPLITS else None
    split = check_split(split) if split is not None else LRS2_SPLITS.get(subset or "")
    try:
        max_seconds = float(max_seconds)
    except ValueError:
        raise ManifestError(f"max_seconds must be a number of seconds, not {max_seconds!r}") from None
    if not max_seconds > 0:
        raise ManifestError(f"max_seconds must be positive, not {max_seconds}")
    items = [(f"{list_path} line {lineno}", item_id) for lineno, item_id in read_id_list(list_path)]
    clips = clips_from_ids(items, media_root=media_root, data_root=data_root, dataset=dataset, split=split,
                           video_ext=video_ext, transcript_fn=transcript_fn, speaker_fn=speaker_fn, source=list_path,
                           subset=subset)
    return [piece for clip in clips for piece in split_clip(clip, max_seconds)]


CORPUS = Corpus(licence="BBC research licence: non-commercial research only, by agreement with BBC R&D",
                hf_licence="other", homepage="https://www.robots.ox.ac.uk/~vgg/data/lip_reading/lrs2.html")

READER = Reader(
    name="lrs2", read=read_lrs2_list,
    description="LRS2-style list of VIDEO/UTTERANCE ids under a media root (visual_tts); long clips cut at words",
    options=(
        DATASET, SPLIT, DATA_ROOT,
        ReaderOption("media_root", "--media-root", "folder the list's ids are relative to", kind="path",
                     required=True),
        ReaderOption("video_ext", "--video-ext", "video file extension (default .mp4)"),
        ReaderOption("max_seconds", "--max-seconds",
                     "cut clips whose timed words run longer into pieces at word boundaries (default 10, extract's "
                     "decode.max_seconds)"),
    ),
    corpus=CORPUS,
)
