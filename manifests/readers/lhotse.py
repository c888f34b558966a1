"""lhotse manifests: a CutSet, or a RecordingSet with a SupervisionSet, so every corpus lhotse has a recipe for is
an input. Needs the `lhotse` extra (`pip install 'vssflow-pipeline[lhotse]'`); imported only when this reader runs.

One row per cut (from a RecordingSet + SupervisionSet: one cut per supervision, lhotse's `trim_to_supervisions`):

- media: the recording's one local file source; a recording with video (`Recording.has_video`) is a `video_path`
  (its audio is the container's), else an `audio_path`, relative to the data root (default: the folder holding
  every media file, reported so extract gets the same `--data-root`);
- window: the cut's start and end on the recording (none when the cut is the whole recording);
- supervisions: their texts joined in time order are the transcript, their extent (clipped to the cut) the speech
  span, their speaker the speaker (none when they disagree), their `word` alignments the timed words (lhotse keeps
  alignments on the recording's timeline, as the manifest does);
- task: `visual_tts` (video and text), `tts` (text), `v2s` (video, no text); a cut with neither is skipped with a
  note. Sources that are not local files (URLs, commands, in-memory audio) and mixed cuts are refused by name.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional

from manifests.readers.common import check_split, check_unique, relative_to_root, sanitize_clip_id
from manifests.readers.reader import DATA_ROOT, DATASET, SPLIT, Reader, ReaderOption
from manifests.schema import Clip, Word
from manifests.validate import MAX_LISTED, ManifestError, ManifestWarning


def load_cuts(source: str | Path, supervisions: Optional[str | Path]):
    """The CutSet in `source`, or the cuts of a RecordingSet `source` and a SupervisionSet, one per supervision."""
    try:
        import lhotse
    except ImportError:
        raise ManifestError("reading lhotse manifests needs lhotse: pip install 'vssflow-pipeline[lhotse]'") from None
    try:
        manifest = lhotse.load_manifest(source)
        if supervisions is None:
            if not isinstance(manifest, lhotse.CutSet):
                raise ManifestError(f"{source} holds a {type(manifest).__name__}, not a CutSet: give the "
                                    "supervisions too (--supervisions), or a CutSet")
            return manifest
        sups = lhotse.load_manifest(supervisions)
        if not isinstance(manifest, lhotse.RecordingSet) or not isinstance(sups, lhotse.SupervisionSet):
            raise ManifestError(f"with --supervisions, {source} must hold a RecordingSet and {supervisions} a "
                                f"SupervisionSet (found {type(manifest).__name__}, {type(sups).__name__})")
        return lhotse.CutSet.from_manifests(recordings=manifest, supervisions=sups).trim_to_supervisions(
            keep_overlapping=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ManifestError(f"{source} is not a readable lhotse manifest: {type(e).__name__}: {e}") from None


def _media(cut) -> tuple[Optional[Path], str]:
    """(the recording's local file, "") or (None, why it cannot be a manifest path)."""
    recording = getattr(cut, "recording", None)
    if recording is None:
        return None, f"a {type(cut).__name__} (mixed or padding cuts have no one recording)"
    files = [s for s in recording.sources if s.type == "file"]
    if len(recording.sources) != 1 or len(files) != 1:
        kinds = ", ".join(s.type for s in recording.sources)
        return None, f"recording {recording.id} has sources [{kinds}]; only one local file can be a media path"
    return Path(os.path.abspath(files[0].source)), ""


def _speech(cut) -> dict[str, Any]:
    """Transcript, speaker, speech span and words (recording time) from the cut's supervisions."""
    sups = sorted(cut.supervisions, key=lambda s: s.start)
    texts = [s.text.strip() for s in sups if s.text and s.text.strip()]
    if not texts:
        return {}
    start, end = float(cut.start), float(cut.start + cut.duration)
    speakers = {s.speaker for s in sups if s.speaker}
    words = [Word(word=item.symbol, start_s=round(float(item.start), 3), end_s=round(float(item.end), 3))
             for s in sups for item in (s.alignment or {}).get("word", [])
             if start - 1e-3 <= item.start and item.end <= end + 1e-3]
    return {"transcript": " ".join(texts), "speaker": speakers.pop() if len(speakers) == 1 else None,
            "speech_start_s": round(max(start, start + min(s.start for s in sups)), 3),
            "speech_end_s": round(min(end, start + max(s.end for s in sups)), 3),
            "words": tuple(words) if words else None}


def read_lhotse(source: str | Path, *, supervisions: str | Path | None = None, dataset: Optional[str] = None,
                split: Optional[str] = None, data_root: str | Path | None = None) -> list[Clip]:
    split = check_split(split)
    cuts = list(load_cuts(source, supervisions))
    found, bad, skipped = [], [], 0
    for cut in cuts:
        path, why = _media(cut)
        if path is None:
            bad.append(f"cut {cut.id}: {why}")
            continue
        found.append((cut, path))
    if bad:
        raise ManifestError(f"{source}: {len(bad)} cut(s) cannot become manifest rows: {'; '.join(bad[:MAX_LISTED])}")
    if data_root is None and found:
        data_root = Path(os.path.commonpath([str(p.parent) for _, p in found]))
        warnings.warn(f"media paths are written relative to {data_root}: give extract --data-root {data_root}",
                      ManifestWarning, stacklevel=2)
    clips, pairs = [], []
    for cut, path in found:
        has_video = bool(cut.recording.has_video)
        speech = _speech(cut)
        task = ("visual_tts" if has_video else "tts") if speech else ("v2s" if has_video else None)
        if task is None:
            skipped += 1
            continue
        whole = cut.start == 0 and abs(cut.duration - cut.recording.duration) < 1e-3
        clip_id = sanitize_clip_id(cut.id)
        pairs.append((cut.id, clip_id))
        media = relative_to_root(path, Path(data_root))
        clips.append(Clip(clip_id=clip_id, task=task, dataset=dataset, split=split,
                          video_path=media if has_video else None, audio_path=None if has_video else media,
                          start_s=None if whole else round(float(cut.start), 3),
                          end_s=None if whole else round(float(cut.start + cut.duration), 3), **speech))
    if skipped:
        warnings.warn(f"{skipped} cut(s) have neither video nor supervision text, so no task: skipped",
                      ManifestWarning, stacklevel=2)
    check_unique(pairs, source)
    return clips


READER = Reader(
    name="lhotse", read=read_lhotse,
    description="lhotse CutSet, or RecordingSet + SupervisionSet (--supervisions): tts, visual_tts or v2s",
    options=(DATASET, SPLIT, DATA_ROOT,
             ReaderOption("supervisions", "--supervisions", "SupervisionSet file when the source is a RecordingSet "
                          "(one clip per supervision)", kind="path")),
)
