"""Readers: common corpus layouts -> manifest rows (DESIGN §3).

Readers only list folders and read text files (lists, transcripts, alignments); they never open media, so they
do not check that media files exist or decode (`pipeline manifest validate --data-root` checks existence, the
extract stages reject what does not decode).

Media paths are written relative to a data root (`data_root`, by default the corpus folder itself) so that the
manifest moves with the data; pass the folder you will give `pipeline run extract --data-root` when the corpus lies
somewhere below it. clip_ids are derived from the corpus's own ids with every character outside [A-Za-z0-9_-]
replaced by '_' (`sanitize_clip_id`); two ids that collide after that are a ManifestError, never a silent merge.
A row whose transcript file is missing is kept with a null transcript (the extract stage rejects it with a reason).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

import pyarrow as pa
import pyarrow.compute as pc

from manifests.schema import CLIP_ID_PATTERN, MANIFEST_SCHEMA, Clip, clips_to_table
from manifests.tasks import TASKS
from manifests.validate import MAX_LISTED, ManifestError, conform_table, validate_table

LRS2_SPLITS = ("pretrain", "train", "val", "test")
GRID_ALIGN_UNITS_PER_S = 25_000.0  # GRID .align times count 1000 units per 25 fps video frame
GRID_SILENCES = frozenset({"sil", "sp"})
LIBRITTS_SPLIT = re.compile(r"^(train|dev|test)-")
REFERENCE_COLUMNS = ("audio_path", "clip_feature", "speaker_embedding", "lip_feature", "sync_feature",
                     "phone_ids", "phones")


@dataclass(frozen=True)
class Transcript:
    """What a transcript file says: the text, and the span of speech in the clip when the file knows it."""

    text: str
    speech_start_s: Optional[float] = None
    speech_end_s: Optional[float] = None


# A transcript_fn gets (media_root, item_id) and returns the text, a Transcript, or None when there is none.
TranscriptFn = Callable[[Path, str], Union[str, Transcript, None]]


# ------------------------------------------------------------------------------------------------ ids, paths


def sanitize_clip_id(raw: str) -> str:
    """A corpus id as a clip_id: every character outside [A-Za-z0-9_-] becomes '_' ('LJ001.0001' -> 'LJ001_0001')."""
    clip_id = re.sub(r"[^A-Za-z0-9_-]", "_", raw)
    if not CLIP_ID_PATTERN.fullmatch(clip_id):
        raise ManifestError(f"id {raw!r} cannot become a clip_id (empty, or longer than 200 characters)")
    return clip_id


def _check_unique(pairs: Iterable[tuple[str, str]], source: Path | str) -> None:
    """pairs of (corpus id, clip_id): raise when different corpus ids share one clip_id."""
    first: dict[str, str] = {}
    clashes: list[str] = []
    for raw, clip_id in pairs:
        if clip_id in first:
            clashes.append(f"{first[clip_id]!r} and {raw!r} -> {clip_id!r}")
        else:
            first[clip_id] = raw
    if clashes:
        listed = "; ".join(clashes[:MAX_LISTED]) + (f" (and {len(clashes) - MAX_LISTED} more)"
                                                    if len(clashes) > MAX_LISTED else "")
        raise ManifestError(f"{source}: {len(clashes)} id(s) collide once sanitised to clip_ids: {listed}. "
                            "Rename the files, or use `pipeline manifest build table` with your own clip_id column.")


def _relative(path: Path, data_root: Path) -> str:
    """path relative to data_root, as a POSIX string; `..` is collapsed lexically (symlinks are left alone)."""
    absolute, base = Path(os.path.abspath(path)), Path(os.path.abspath(data_root))
    if not absolute.is_relative_to(base):
        raise ManifestError(f"{path} is not under the data root {data_root}: give a data root that holds the corpus")
    return absolute.relative_to(base).as_posix()


def _check_item_id(item_id: str, where: str) -> None:
    """A corpus id used to build a file path must be a plain relative path: no '..', no absolute, no NUL."""
    parts = item_id.replace("\\", "/").split("/")
    if "\x00" in item_id or item_id.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"{where}: id {item_id!r} is not a plain relative name (no '..', '/' at the start, "
                            "empty parts or NUL): fix the list")


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as e:
        raise ManifestError(f"{path} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read {path} as UTF-8 text ({type(e).__name__}: {e})") from e


def _fail_on_lines(path: Path, bad: list[str], expected: str) -> None:
    if bad:
        listed = "; ".join(bad[:MAX_LISTED]) + (f" (and {len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else "")
        raise ManifestError(f"{path}: {len(bad)} malformed line(s), expected {expected}: {listed}")


def _read_text_or_none(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read transcript {path} as UTF-8 text ({type(e).__name__}: {e})") from e


# ------------------------------------------------------------------------------------------------- LJSpeech


def read_ljspeech(root: str | Path, *, dataset: str = "ljspeech", split: Optional[str] = None,
                  text: str = "normalized", data_root: str | Path | None = None) -> list[Clip]:
    """LJSpeech layout: `root/metadata.csv` and `root/wavs/ID.wav`; task tts.

    metadata.csv is pipe-delimited without header or quoting: `ID|transcript|normalized transcript`
    (`text="raw"` takes the second field; lines with only `ID|transcript` use it either way).
    """
    root = Path(root)
    if text not in ("normalized", "raw"):
        raise ValueError(f"text must be 'normalized' or 'raw', not {text!r}")
    metadata = root / "metadata.csv"
    data_root = Path(data_root) if data_root is not None else root
    clips, pairs, bad = [], [], []
    for lineno, line in enumerate(_read_lines(metadata), start=1):
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
                          audio_path=_relative(root / "wavs" / f"{item_id}.wav", data_root),
                          transcript=transcript.strip()))
    _fail_on_lines(metadata, bad, "ID|transcript|normalized transcript")
    _check_unique(pairs, metadata)
    return clips


# ------------------------------------------------------------------------------------------------- LibriTTS


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
        transcript = _read_text_or_none(wav.with_name(f"{stem}.normalized.txt"))
        if transcript is None:
            transcript = _read_text_or_none(wav.with_name(f"{stem}.original.txt"))
        row_split = split if split is not None else (parts[0] if len(parts) == 4 else root_split)
        clip_id = sanitize_clip_id(stem)
        pairs.append(("/".join(parts), clip_id))
        clips.append(Clip(clip_id=clip_id, task="tts", dataset=dataset, split=row_split, speaker=parts[-3],
                          audio_path=_relative(wav, data_root),
                          transcript=transcript.strip() if transcript is not None else None))
    _check_unique(pairs, root)
    return clips


# ------------------------------------------------------------------------------------------------- VGGSound


def read_vggsound(csv_path: str | Path, *, video_dir: str | Path, dataset: str = "vggsound",
                  split: Optional[str] = None, filename_pattern: str = "{youtube_id}_{start:06d}.mp4",
                  data_root: str | Path | None = None) -> list[Clip]:
    """VGGSound csv: rows `youtube_id,start_seconds,label,split`, no header; task v2s.

    The video is `video_dir/filename_pattern` (formatted with youtube_id and start, an int). The clips are the
    pre-cut 10 s files, so start_s/end_s stay null. The label has no manifest column and is not kept.
    `split` keeps only the rows of that split (default: all rows). clip_id is `{youtube_id}_{start:06d}`.
    """
    csv_path, video_dir = Path(csv_path), Path(video_dir)
    data_root = Path(data_root) if data_root is not None else video_dir
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(enumerate(csv.reader(f), start=1))
    except FileNotFoundError as e:
        raise ManifestError(f"{csv_path} does not exist") from e
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"cannot read {csv_path} as a UTF-8 csv ({type(e).__name__}: {e})") from e
    clips, pairs, bad = [], [], []
    for lineno, row in rows:
        if not row or not "".join(row).strip():
            continue
        if lineno == 1 and len(row) > 1 and row[1].strip().lower() in ("start_seconds", "start", "start_s"):
            continue  # a header line, although the official csv has none
        if len(row) != 4:
            bad.append(f"line {lineno} has {len(row)} field(s)")
            continue
        youtube_id, start_text, _label, row_split = (field.strip() for field in row)
        try:
            start = int(start_text)
        except ValueError:
            bad.append(f"line {lineno} start_seconds {start_text!r} is not an integer")
            continue
        if not youtube_id or start < 0:
            bad.append(f"line {lineno} has an empty youtube_id or a negative start")
            continue
        if split is not None and row_split != split:
            continue
        filename = filename_pattern.format(youtube_id=youtube_id, start=start)
        _check_item_id(filename, f"{csv_path} line {lineno}")
        clip_id = sanitize_clip_id(f"{youtube_id}_{start:06d}")
        pairs.append((f"{youtube_id},{start}", clip_id))
        clips.append(Clip(clip_id=clip_id, task="v2s", dataset=dataset, split=row_split or None,
                          video_path=_relative(video_dir / filename, data_root)))
    _fail_on_lines(csv_path, bad, "youtube_id,start_seconds,label,split")
    _check_unique(pairs, csv_path)
    return clips


# ---------------------------------------------------------------------------------------------- LRS2, GRID


def lrs2_transcript(media_root: Path, item_id: str) -> Optional[str]:
    """LRS2/LRS3 `{item_id}.txt`: the first line is `Text:  WORDS`. None when the file does not exist."""
    path = media_root / f"{item_id}.txt"
    content = _read_text_or_none(path)
    if content is None:
        return None
    first = content.splitlines()[0] if content.strip() else ""
    if not first.startswith("Text:"):
        raise ManifestError(f"{path}: first line should start with 'Text:', found {first[:80]!r}")
    return first[len("Text:"):].strip()


def grid_align_transcript(path: Path) -> Optional[Transcript]:
    """A GRID `.align` file: lines `start end word` in 1/25000 s; `sil`/`sp` are dropped from the text and the speech
    span runs from the first word's start to the last word's end. None when the file does not exist."""
    content = _read_text_or_none(path)
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
    _fail_on_lines(path, bad, "'start end word'")
    if not words:
        return Transcript(text="")
    return Transcript(text=" ".join(words), speech_start_s=spans[0][0] / GRID_ALIGN_UNITS_PER_S,
                      speech_end_s=spans[-1][1] / GRID_ALIGN_UNITS_PER_S)


def _read_list(list_path: Path) -> list[tuple[int, str]]:
    """(line number, id) from a list file: first token per line; blank lines and '#' comments skipped."""
    items = []
    for lineno, line in enumerate(_read_lines(list_path), start=1):
        tokens = line.split()
        if tokens and not tokens[0].startswith("#"):
            items.append((lineno, tokens[0]))
    if not items:
        raise ManifestError(f"{list_path} lists no clips")
    return items


def _clips_from_items(items: list[tuple[str, str]], *, media_root: Path, data_root: Path, dataset: str,
                      split: Optional[str], video_ext: str, transcript_fn: TranscriptFn,
                      speaker_fn: Optional[Callable[[str], Optional[str]]], source: Path) -> list[Clip]:
    """items: (where, id) pairs; one visual_tts clip per id with video `media_root/{id}{video_ext}`."""
    clips, pairs = [], []
    for where, item_id in items:
        _check_item_id(item_id, where)
        found = transcript_fn(media_root, item_id)
        transcript = found if isinstance(found, Transcript) else Transcript(found) if found is not None else None
        clip_id = sanitize_clip_id(item_id)
        pairs.append((item_id, clip_id))
        clips.append(Clip(
            clip_id=clip_id, task="visual_tts", dataset=dataset, split=split,
            video_path=_relative(media_root / f"{item_id}{video_ext}", data_root),
            transcript=transcript.text if transcript is not None else None,
            speaker=speaker_fn(item_id) if speaker_fn is not None else None,
            speech_start_s=transcript.speech_start_s if transcript is not None else None,
            speech_end_s=transcript.speech_end_s if transcript is not None else None,
        ))
    _check_unique(pairs, source)
    return clips


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
    items = [(f"{list_path} line {lineno}", item_id) for lineno, item_id in _read_list(list_path)]
    return _clips_from_items(items, media_root=media_root, data_root=data_root, dataset=dataset, split=split,
                             video_ext=video_ext, transcript_fn=transcript_fn, speaker_fn=speaker_fn, source=list_path)


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
        items = [(f"{list_path} line {lineno}", item_id) for lineno, item_id in _read_list(list_path)]
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

    return _clips_from_items(items, media_root=root, data_root=data_root, dataset=dataset, split=split,
                             video_ext=video_ext, transcript_fn=transcript_fn,
                             speaker_fn=lambda item_id: item_id.split("/")[0], source=source)


# ---------------------------------------------------------------------------------------- generic CSV/JSONL


def read_table(path: str | Path, *, mapping: dict[str, str] | None = None,
               defaults: dict[str, Any] | None = None) -> pa.Table:
    """A CSV (`.csv`, `.tsv`, with a header) or JSON Lines (`.jsonl`, `.ndjson`) file as a manifest table.

    mapping is {manifest_column: source_column}; a manifest column not in mapping is taken from the source column
    of the same name when there is one. defaults are constants filling a column where it is null or absent (e.g.
    {"task": "v2s"}). Other source columns are dropped. CSV values are read as text (so ids like `00042` keep their
    zeros), empty fields as null; media paths are taken as written.
    """
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    path = Path(path)
    mapping = dict(mapping or {})
    _check_columns(mapping, "mapping")
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ManifestError(f"{path} does not exist")
    try:
        if suffix in (".csv", ".tsv"):
            delimiter = "\t" if suffix == ".tsv" else ","
            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f, delimiter=delimiter), None)
            if not header:
                raise ManifestError(f"{path} is empty: a CSV manifest needs a header line")
            source = pacsv.read_csv(
                path, parse_options=pacsv.ParseOptions(delimiter=delimiter),
                convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in header},
                                                     strings_can_be_null=True, null_values=[""]))
        elif suffix in (".jsonl", ".ndjson"):
            source = pajson.read_json(path)
        else:
            raise ManifestError(f"{path}: unknown table format {suffix!r}; use .csv, .tsv, .jsonl or .ndjson")
    except (pa.ArrowException, OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"cannot read {path} ({type(e).__name__}: {e})") from e
    missing = sorted(set(mapping.values()) - set(source.column_names))
    if missing:
        raise ManifestError(f"{path} has no column(s) {', '.join(missing)} named in the mapping "
                            f"(columns: {', '.join(source.column_names)})")
    names = [name for name in MANIFEST_SCHEMA.names if mapping.get(name, name) in source.column_names]
    if "clip_id" not in names:
        raise ManifestError(f"{path} has no clip_id column (columns: {', '.join(source.column_names)}): "
                            "name the id column with a mapping, e.g. --map clip_id=ID_COLUMN")
    table = pa.Table.from_arrays([source[mapping.get(name, name)] for name in names], names=names)
    for name in defaults or {}:  # absent columns as nulls, so that their defaults fill them
        if name not in table.column_names and name in MANIFEST_SCHEMA.names:
            table = table.append_column(name, pa.nulls(table.num_rows, MANIFEST_SCHEMA.field(name).type))
    return apply_defaults(conform_table(table, source=str(path)), defaults)


def apply_defaults(table: pa.Table, defaults: dict[str, Any] | None) -> pa.Table:
    """Fill nulls of the named columns with constants (text is cast to the column's type, e.g. '1.5' -> 1.5)."""
    if not defaults:
        return table
    _check_columns(defaults, "defaults")
    for name, value in defaults.items():
        field = MANIFEST_SCHEMA.field(name)
        try:
            scalar = pa.scalar(value).cast(field.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise ManifestError(f"default {name}={value!r} cannot be read as {field.type} ({e})") from e
        table = table.set_column(table.schema.get_field_index(name), field, pc.fill_null(table[name], scalar))
    return table


def _check_columns(names: Iterable[str], what: str) -> None:
    unknown = sorted(set(names) - set(MANIFEST_SCHEMA.names))
    if unknown:
        raise ManifestError(f"{what} names column(s) {', '.join(unknown)} that the manifest does not have "
                            f"(columns: {', '.join(MANIFEST_SCHEMA.names)})")


# ---------------------------------------------------------------------------------- reference implementation


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
    list_path = Path(list_path)
    if task not in TASKS:
        raise ManifestError(f"task {task!r} is not one of {', '.join(TASKS)}")
    clips, pairs, bad = [], [], []
    for lineno, line in enumerate(_read_lines(list_path), start=1):
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
            audio = _relative(audio_path, Path(data_root))
        video = None
        if video_pattern is not None:
            video = video_pattern.format(stem=audio_path.stem)
            _check_item_id(video, f"{list_path} line {lineno}")
        clip_id = sanitize_clip_id(audio_path.stem)
        pairs.append((fields[0].strip(), clip_id))
        clips.append(Clip(clip_id=clip_id, task=task, dataset=dataset, split=split, audio_path=audio, video_path=video))
    _fail_on_lines(list_path, bad, " | ".join(REFERENCE_COLUMNS))
    if not clips:
        raise ManifestError(f"{list_path} lists no clips")
    _check_unique(pairs, list_path)
    return clips


# ------------------------------------------------------------------------------------------------- dispatch

READERS: dict[str, Callable[..., list[Clip] | pa.Table]] = {
    "ljspeech": read_ljspeech,
    "libritts": read_libritts,
    "vggsound": read_vggsound,
    "lrs2": read_lrs2_list,
    "grid": read_grid,
    "table": read_table,
    "reference": read_reference_list,
}


def build_manifest(format: str, source: str | Path, *, defaults: dict[str, Any] | None = None,
                   **kwargs: Any) -> pa.Table:
    """Read `source` with the reader named `format` (see READERS), fill `defaults`, validate, return the table.

    kwargs go to the reader (e.g. video_dir for vggsound, media_root for lrs2, task for reference). Raises
    ManifestError for an unreadable source, an empty result, or an invalid manifest.
    """
    if format not in READERS:
        raise ManifestError(f"unknown manifest format {format!r}; known: {', '.join(READERS)}")
    if format == "table":
        table = read_table(source, defaults=defaults, **kwargs)
    else:
        result = READERS[format](source, **kwargs)
        table = apply_defaults(clips_to_table(result) if isinstance(result, list) else result, defaults)
    if table.num_rows == 0:
        raise ManifestError(f"{source} gave no rows for format {format!r}")
    validate_table(table)
    return table
