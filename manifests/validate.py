"""Reading and checking manifests before any work starts.

Two levels of problems:

- `ManifestError`: the manifest as a whole cannot be trusted (missing required columns, unknown tasks,
  duplicate or malformed clip_ids, uncastable columns, unreadable file). A job must stop before it starts.
- Row warnings (`row_warnings`): one row is doubtful (inverted trim window, speech task without transcript, ...).
  These never stop a job: the extract stages reject such rows with a reason, so every row is accounted for.

All checks are vectorised with pyarrow.compute so that manifests of millions of rows validate in seconds.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from manifests.errors import PipelineError
from manifests.schema import CLIP_ID_PATTERN, MANIFEST_SCHEMA, REQUIRED_COLUMNS
from manifests.splits import SPLITS, canonical_split
from manifests.tasks import SPEECH_TASKS, TASKS, VIDEO_TASKS

MAX_LISTED = 10  # offending rows (or values) named per problem in an error message
TIME_COLUMNS = ("start_s", "end_s", "speech_start_s", "speech_end_s")
MEDIA_COLUMNS = ("video_path", "audio_path")


class ManifestError(PipelineError, ValueError):
    """The manifest cannot be used as it is; `problems` holds one readable paragraph per problem."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


class ManifestWarning(UserWarning):
    """Something in a manifest was adjusted on reading (extra columns dropped, NaN times read as null)."""


class RowWarning(NamedTuple):
    row_index: int  # 0-based row number in the table
    clip_id: str
    problem: str  # a key of ROW_PROBLEMS


# Per-row problems: key -> what it means. Times (start_s/end_s and the speech span) are all seconds on the
# media file's own timeline, so the speech span must lie inside the trim window when one is set.
ROW_PROBLEMS = {
    "non_finite_time": "a time column holds NaN or infinity",
    "negative_time": "a time column is negative",
    "start_not_before_end": "start_s >= end_s: the trim window is empty or inverted",
    "speech_span_incomplete": "only one of speech_start_s / speech_end_s is set",
    "speech_start_not_before_end": "speech_start_s >= speech_end_s",
    "speech_span_outside_window": "the speech span lies (partly) outside the trim window [start_s, end_s]",
    "speech_without_transcript": "a speech task (visual_tts, tts, joint) has no transcript",
    "video_task_without_video": "a video task (v2s, visual_tts, joint) has no video_path",
    "no_media": "neither video_path nor audio_path is set",
    "transcript_unreadable": "the corpus has a transcript for the clip that could not be read (transcript_problem)",
}


# The row problems about times: decode rejects a row that has one (reason = the problem's name) before it opens
# any media, so a negative or inverted window is never decoded from somewhere else in the file.
TIME_PROBLEMS = ("non_finite_time", "negative_time", "start_not_before_end", "speech_span_incomplete",
                 "speech_start_not_before_end", "speech_span_outside_window")


def time_problem(row: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    """The first of TIME_PROBLEMS that one row (a dict of manifest columns) has, as (problem, detail), or None.

    The same rules as `row_warnings`, for one row: decode applies them before opening the row's media.
    """
    t = {name: row.get(name) for name in TIME_COLUMNS}
    shown = ", ".join(f"{k}={v}" for k, v in t.items() if v is not None)
    start, end, s0, s1 = (t[name] for name in TIME_COLUMNS)
    checks = (
        ("non_finite_time", any(v is not None and not math.isfinite(v) for v in t.values())),
        ("negative_time", any(v is not None and v < 0 for v in t.values())),
        ("start_not_before_end", start is not None and end is not None and start >= end),
        ("speech_span_incomplete", (s0 is None) != (s1 is None)),
        ("speech_start_not_before_end", s0 is not None and s1 is not None and s0 >= s1),
        ("speech_span_outside_window", (s0 is not None and start is not None and s0 < start)
         or (end is not None and any(v is not None and v > end for v in (s0, s1)))),
    )
    for problem, found in checks:
        if found:
            return problem, f"{ROW_PROBLEMS[problem]} ({shown})"
    return None


# ----------------------------------------------------------------------------------------------- reading


def read_manifest(path: str | Path) -> pa.Table:
    """Read a Parquet manifest (a file or a folder of Parquet files), conform it to MANIFEST_SCHEMA and validate it.

    Only the schema's columns are read; other columns are dropped with a ManifestWarning. Missing optional columns
    become nulls. Raises ManifestError when the file cannot be read or the manifest is invalid.
    """
    import pyarrow.dataset as ds

    path = Path(path)
    if not path.exists():
        raise ManifestError(f"manifest {path} does not exist: build one with `pipeline manifest build`")
    try:
        dataset = ds.dataset(path, format="parquet")
        present = dataset.schema.names
        wanted = [name for name in MANIFEST_SCHEMA.names if name in present]
        table = dataset.to_table(columns=wanted)
    except (pa.ArrowException, OSError) as e:
        raise ManifestError(
            f"{path} is not a readable Parquet manifest ({type(e).__name__}: {e}). "
            "Build one with `pipeline manifest build`, or convert a CSV/JSONL with `pipeline manifest build table`."
        ) from e
    extra = [name for name in present if name not in MANIFEST_SCHEMA.names]
    if extra:
        warnings.warn(f"{path}: columns not in the manifest schema were dropped: {', '.join(extra)}",
                      ManifestWarning, stacklevel=2)
    table = conform_table(table, source=str(path))
    validate_table(table)
    return table


def conform_table(table: pa.Table, *, source: str = "manifest") -> pa.Table:
    """Cast a table to MANIFEST_SCHEMA: same column order and types, missing optional columns as nulls.

    Extra columns are dropped with a ManifestWarning; NaN in a time column means "not set" (pandas writes missing
    floats as NaN) and becomes null, with a ManifestWarning saying how many. Raises ManifestError for missing
    required columns and for columns that cannot be cast.
    """
    if table.schema.equals(MANIFEST_SCHEMA, check_metadata=False):
        return table.replace_schema_metadata(MANIFEST_SCHEMA.metadata)
    missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if missing:
        raise ManifestError(
            f"{source} lacks the required column(s) {', '.join(missing)} (columns present: "
            f"{', '.join(table.column_names) or 'none'}). Add them, e.g. `pipeline manifest build table SRC "
            "--map clip_id=ID_COLUMN --set task=v2s`."
        )
    extra = [name for name in table.column_names if name not in MANIFEST_SCHEMA.names]
    if extra:
        warnings.warn(f"{source}: columns not in the manifest schema were dropped: {', '.join(extra)}",
                      ManifestWarning, stacklevel=2)
    arrays, problems = [], []
    for field in MANIFEST_SCHEMA:
        if field.name not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table[field.name]
        if column.type != field.type:
            try:
                column = column.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
                problems.append(
                    f"column {field.name} has type {column.type} and cannot be read as {field.type} ({e}). "
                    f"Write {field.name} as {field.type} values (null where unknown)."
                )
                continue
        if pa.types.is_floating(field.type):
            nan = pc.fill_null(pc.is_nan(column), False)
            n_nan = pc.sum(nan).as_py() or 0
            if n_nan:
                warnings.warn(f"{source}: {n_nan} NaN value(s) in {field.name} read as null (not set)",
                              ManifestWarning, stacklevel=2)
                column = pc.if_else(nan, pa.scalar(None, field.type), column)
        arrays.append(column)
    if problems:
        raise ManifestError(f"{source} has columns of the wrong type:\n- " + "\n- ".join(problems), problems)
    conformed = pa.Table.from_arrays(arrays, schema=MANIFEST_SCHEMA)
    return conformed if "subset" in table.column_names else _canonical_splits(conformed, source)


def _canonical_splits(table: pa.Table, source: str) -> pa.Table:
    """A manifest written before splits were canonical (no subset column): each split name that is not train, valid
    or test moves to subset and split becomes its canonical name ('test-clean' -> test); unknown names stay (and
    validate_table names them)."""
    names = [n for n in pc.unique(table["split"]).to_pylist() if n is not None and n not in SPLITS]
    mapping = {n: canonical_split(n) for n in names}
    mapped = {n: c for n, c in mapping.items() if c is not None}
    if not mapped:
        return table
    split = table["split"].to_pylist()
    subset = [v if v in mapped else None for v in split]
    table = table.set_column(table.schema.get_field_index("split"), MANIFEST_SCHEMA.field("split"),
                             pa.array([mapped.get(v, v) for v in split], pa.string()))
    table = table.set_column(table.schema.get_field_index("subset"), MANIFEST_SCHEMA.field("subset"),
                             pa.array(subset, pa.string()))
    warnings.warn(f"{source}: split names moved to subset and mapped to canonical splits: "
                  + ", ".join(f"{n} -> {c}" for n, c in sorted(mapped.items())), ManifestWarning, stacklevel=3)
    return table


# ------------------------------------------------------------------------------------------- validation


def validate_table(table: pa.Table) -> None:
    """Raise ManifestError naming every manifest-level problem (up to MAX_LISTED rows or values each)."""
    table = conform_table(table)
    clip_id, task = table["clip_id"], table["task"]
    problems = []

    for name in REQUIRED_COLUMNS:
        null = pc.is_null(table[name])
        rows, total = _true_rows(null)
        if total:
            problems.append(f"required column {name} is empty in {total} row(s): {_rows_text(rows, total)}. "
                            f"Every row needs a {name}.")

    unknown = pc.fill_null(pc.invert(pc.is_in(task, value_set=pa.array(TASKS))), False)
    rows, total = _true_rows(unknown)
    if total:
        values = pc.unique(task.filter(unknown)).to_pylist()
        problems.append(
            f"unknown task value(s) {_values_text(values)} in {total} row(s): {_rows_text(rows, total)}. "
            f"Allowed tasks: {', '.join(TASKS)}."
        )

    split = table["split"]
    odd = pc.and_(pc.is_valid(split), pc.invert(pc.is_in(split, value_set=pa.array(SPLITS))))
    rows, total = _true_rows(odd)
    if total:
        values = pc.unique(split.filter(odd)).to_pylist()
        problems.append(
            f"split value(s) {_values_text(values)} in {total} row(s) ({_rows_text(rows, total)}) are not one of "
            f"{', '.join(SPLITS)}. split is canonical (the trainer holds out valid and test by it); put the corpus's "
            "own name in subset (the readers do this), e.g. split=test subset=test-clean."
        )

    bad_id = pc.fill_null(pc.invert(pc.match_substring_regex(clip_id, CLIP_ID_PATTERN.pattern)), False)
    rows, total = _true_rows(bad_id)
    if total:
        values = clip_id.take(pa.array(rows)).to_pylist()
        problems.append(
            f"{total} clip_id(s) do not match {CLIP_ID_PATTERN.pattern} (they become WebDataset keys: letters, "
            f"digits, '_' and '-' only, no dots, not starting with '_'): {_values_text(values)} at {_rows_text(rows, total)}. "
            "Readers sanitise ids for you (`pipeline manifest build`); otherwise replace the other characters."
        )

    counts = pc.value_counts(clip_id.drop_null() if clip_id.null_count else clip_id)
    dup_mask = pc.greater(counts.field("counts"), 1)
    duplicated = counts.field("values").filter(dup_mask)
    if len(duplicated):
        shown = duplicated.slice(0, MAX_LISTED)
        at = pc.fill_null(pc.is_in(clip_id, value_set=shown), False)
        rows_of: dict[str, list[int]] = {}
        all_rows, _ = _true_rows(at, limit=None)
        for row, value in zip(all_rows, clip_id.take(pa.array(all_rows, pa.int64())).to_pylist()):
            rows_of.setdefault(value, []).append(row)
        listed = "; ".join(f"{v!r} at rows {', '.join(map(str, r[:MAX_LISTED]))}"
                           + (" ..." if len(r) > MAX_LISTED else "") for v, r in rows_of.items())
        more = f" (and {len(duplicated) - len(shown)} more duplicated ids)" if len(duplicated) > len(shown) else ""
        problems.append(f"{len(duplicated)} duplicate clip_id(s): {listed}{more}. clip_ids must be unique: "
                        "give each clip its own id (e.g. prefix the corpus name when merging manifests).")

    if problems:
        raise ManifestError(
            f"invalid manifest ({len(problems)} problem(s); rows are 0-based):\n- " + "\n- ".join(problems), problems
        )


def row_warnings(table: pa.Table) -> list[RowWarning]:
    """Per-row problems that do not stop a job (see ROW_PROBLEMS), ordered by row then by problem."""
    table = conform_table(table)
    t = {name: table[name] for name in TIME_COLUMNS}

    def present(name):  # non-null and not blank
        return pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(table[name])), 0), False)

    def both(mask):
        return pc.fill_null(mask, False)

    any_non_finite = any_negative = None
    for col in t.values():
        non_finite = both(pc.invert(pc.is_finite(col)))
        negative = both(pc.less(col, 0.0))
        any_non_finite = non_finite if any_non_finite is None else pc.or_(any_non_finite, non_finite)
        any_negative = negative if any_negative is None else pc.or_(any_negative, negative)

    has_start, has_end = pc.is_valid(t["speech_start_s"]), pc.is_valid(t["speech_end_s"])
    task = table["task"]
    is_speech = both(pc.is_in(task, value_set=pa.array(sorted(SPEECH_TASKS))))
    is_video = both(pc.is_in(task, value_set=pa.array(sorted(VIDEO_TASKS))))
    has_video, has_audio = present("video_path"), present("audio_path")
    masks = {
        "non_finite_time": any_non_finite,
        "negative_time": any_negative,
        "start_not_before_end": both(pc.greater_equal(t["start_s"], t["end_s"])),
        "speech_span_incomplete": pc.xor(has_start, has_end),
        "speech_start_not_before_end": both(pc.greater_equal(t["speech_start_s"], t["speech_end_s"])),
        "speech_span_outside_window": pc.or_(
            both(pc.less(t["speech_start_s"], t["start_s"])),
            pc.or_(both(pc.greater(t["speech_end_s"], t["end_s"])), both(pc.greater(t["speech_start_s"], t["end_s"]))),
        ),
        "speech_without_transcript": pc.and_(pc.and_(is_speech, pc.invert(present("transcript"))),
                                             pc.invert(present("transcript_problem"))),
        "video_task_without_video": pc.and_(is_video, pc.invert(has_video)),
        "no_media": pc.and_(pc.invert(has_video), pc.invert(has_audio)),
        "transcript_unreadable": present("transcript_problem"),
    }
    assert set(masks) == set(ROW_PROBLEMS)
    found: list[RowWarning] = []
    order = {name: i for i, name in enumerate(ROW_PROBLEMS)}
    for problem, mask in masks.items():
        rows, total = _true_rows(mask, limit=None)
        if total:
            ids = table["clip_id"].take(pa.array(rows, pa.int64())).to_pylist()
            found.extend(RowWarning(r, i, problem) for r, i in zip(rows, ids))
    found.sort(key=lambda w: (w.row_index, order[w.problem]))
    return found


# ----------------------------------------------------------------------------------------------- helpers


def _true_rows(mask: pa.ChunkedArray | pa.Array, limit: int | None = MAX_LISTED) -> tuple[list[int], int]:
    """(first `limit` row indices where mask is true, total count); nulls count as false."""
    chunks = mask.chunks if isinstance(mask, pa.ChunkedArray) else [mask]
    rows: list[int] = []
    total, offset = 0, 0
    for chunk in chunks:
        values = chunk.fill_null(False).to_numpy(zero_copy_only=False)
        hits = np.flatnonzero(values)
        total += len(hits)
        if limit is None or len(rows) < limit:
            take = hits if limit is None else hits[: limit - len(rows)]
            rows.extend(int(h) + offset for h in take)
        offset += len(chunk)
    return rows, total


def _rows_text(rows: list[int], total: int) -> str:
    text = "row" + ("s " if len(rows) > 1 else " ") + ", ".join(map(str, rows))
    return text + (f" (and {total - len(rows)} more)" if total > len(rows) else "")


def _values_text(values: list) -> str:
    shown = ", ".join(repr(v) for v in values[:MAX_LISTED])
    return shown + (f" (and {len(values) - MAX_LISTED} more)" if len(values) > MAX_LISTED else "")
