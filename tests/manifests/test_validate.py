"""Reading a manifest (schema conformed, types cast), whole-manifest errors, and per-row warnings."""

from __future__ import annotations

import pyarrow as pa
import pytest

from manifests.schema import MANIFEST_SCHEMA, clips_to_table, write_manifest
from manifests.validate import (
    ROW_PROBLEMS,
    TIME_PROBLEMS,
    ManifestError,
    ManifestWarning,
    read_manifest,
    row_warnings,
    time_problem,
    validate_table,
)
from tests.manifests.helpers import clip, touch, write

# ------------------------------------------------------------------------------------------- read/validate


def test_read_manifest_round_trip_conforms_schema(tmp_path):
    path = write_manifest([clip("a"), clip("b", "tts", video_path=None, audio_path="b.wav", transcript="hi")],
                          tmp_path / "m.parquet")
    table = read_manifest(path)
    assert table.schema.equals(MANIFEST_SCHEMA)
    assert table["clip_id"].to_pylist() == ["a", "b"]


def test_missing_optional_columns_become_null_and_extra_columns_are_dropped(tmp_path):
    path = write(tmp_path, {"clip_id": ["a", "b"], "task": ["v2s", "v2s"], "class": ["dog", "cat"],
                            "start_s": [1, 2]})  # int64 times cast to float64
    with pytest.warns(ManifestWarning, match="class"):
        table = read_manifest(path)
    assert table.column_names == MANIFEST_SCHEMA.names
    assert table["video_path"].null_count == 2
    assert table["start_s"].to_pylist() == [1.0, 2.0]


def test_castable_types_are_cast(tmp_path):
    path = write(tmp_path, {"clip_id": [1, 2], "task": ["v2s", "v2s"], "end_s": ["1.5", None]})
    table = read_manifest(path)
    assert table["clip_id"].to_pylist() == ["1", "2"]
    assert table["end_s"].to_pylist() == [1.5, None]


def test_nan_times_read_as_null_with_a_warning(tmp_path):
    path = write(tmp_path, {"clip_id": ["a", "b"], "task": ["v2s", "v2s"], "start_s": [float("nan"), 1.0]})
    with pytest.warns(ManifestWarning, match="1 NaN"):
        table = read_manifest(path)
    assert table["start_s"].to_pylist() == [None, 1.0]


def test_missing_required_column(tmp_path):
    path = write(tmp_path, {"clip_id": ["a"], "video_path": ["v.mp4"]})
    with pytest.raises(ManifestError, match="required column.*task"):
        read_manifest(path)


def test_uncastable_column(tmp_path):
    path = write(tmp_path, {"clip_id": ["a"], "task": ["v2s"], "start_s": ["soon"]})
    with pytest.raises(ManifestError, match="start_s has type string and cannot be read as double"):
        read_manifest(path)


def test_not_parquet_and_missing_file(tmp_path):
    bad = touch(tmp_path / "m.parquet", "clip_id,task\na,v2s\n")
    with pytest.raises(ManifestError, match="not a readable Parquet manifest"):
        read_manifest(bad)
    with pytest.raises(ManifestError, match="does not exist"):
        read_manifest(tmp_path / "nope.parquet")


def test_unknown_tasks_are_named_with_rows():
    table = clips_to_table([clip("a"), clip("b", "speech"), clip("c", "V2S"), clip("d", "speech")])
    with pytest.raises(ManifestError) as e:
        validate_table(table)
    msg = str(e.value)
    assert "'speech'" in msg and "'V2S'" in msg and "rows 1, 2, 3" in msg
    assert "v2s, visual_tts, tts, joint" in msg


def test_duplicate_clip_ids_are_named_with_rows():
    table = clips_to_table([clip("a"), clip("b"), clip("a"), clip("c"), clip("b"), clip("a")])
    with pytest.raises(ManifestError) as e:
        validate_table(table)
    msg = str(e.value)
    assert "2 duplicate clip_id(s)" in msg
    assert "'a' at rows 0, 2, 5" in msg and "'b' at rows 1, 4" in msg
    assert "'c'" not in msg


def test_bad_clip_ids_are_named():
    table = clips_to_table([clip("ok-1_x"), clip("a.b"), clip("trailing\n"), clip(""), clip("x" * 201)])
    with pytest.raises(ManifestError) as e:
        validate_table(table)
    msg = str(e.value)
    assert "4 clip_id(s) do not match" in msg
    assert "'a.b'" in msg and "'trailing\\n'" in msg and "rows 1, 2, 3, 4" in msg


def test_row_numbers_count_across_chunks():
    table = pa.concat_tables([clips_to_table([clip("a"), clip("b")]), clips_to_table([clip("c"), clip("b")])])
    assert table["clip_id"].num_chunks == 2
    with pytest.raises(ManifestError, match="'b' at rows 1, 3"):
        validate_table(table)
    table = pa.concat_tables([clips_to_table([clip("a")]), clips_to_table([clip("b", start_s=2.0, end_s=1.0)])])
    assert [(w.row_index, w.clip_id) for w in row_warnings(table)] == [(1, "b")]


def test_null_required_values():
    table = pa.table({"clip_id": ["a", None], "task": ["v2s", "v2s"]})
    with pytest.raises(ManifestError, match="clip_id is empty in 1 row"):
        validate_table(table)


def test_all_problems_reported_together_and_long_lists_are_cut():
    clips = [clip(f"id{i}", "nope") for i in range(25)] + [clip("id0")]
    with pytest.raises(ManifestError) as e:
        validate_table(clips_to_table(clips))
    assert len(e.value.problems) == 2
    assert "(and 15 more)" in str(e.value)


# ----------------------------------------------------------------------------------------------- row warnings

TRIGGERS = {
    "non_finite_time": dict(end_s=float("inf")),
    "negative_time": dict(start_s=-1.0),
    "start_not_before_end": dict(start_s=3.0, end_s=2.0),
    "speech_span_incomplete": dict(speech_start_s=1.0),
    "speech_start_not_before_end": dict(speech_start_s=2.0, speech_end_s=1.0),
    "speech_span_outside_window": dict(start_s=1.0, end_s=5.0, speech_start_s=0.5, speech_end_s=4.0),
    "speech_without_transcript": dict(task="visual_tts", transcript="  "),
    "video_task_without_video": dict(video_path=None, audio_path="a.wav"),
    "no_media": dict(task="tts", video_path=None, transcript="hi"),
    "transcript_unreadable": dict(task="tts", transcript=None, audio_path="a.wav",
                                  transcript_problem="a.txt is not valid UTF-8"),
}


def test_every_row_problem_has_a_trigger():
    assert set(TRIGGERS) == set(ROW_PROBLEMS)


@pytest.mark.parametrize("problem", sorted(TRIGGERS))
def test_row_warning_is_produced(problem):
    kw = dict(TRIGGERS[problem])
    task = kw.pop("task", "v2s")
    if task != "v2s" and "transcript_problem" not in kw:
        kw.setdefault("transcript", "hello")
    table = clips_to_table([clip("clean", "visual_tts", transcript="hi", start_s=0.0, end_s=5.0,
                                 speech_start_s=1.0, speech_end_s=4.0), clip("bad", task, **kw)])
    found = row_warnings(table)
    assert [(w.row_index, w.clip_id, w.problem) for w in found] == [(1, "bad", problem)]


def test_splits_are_canonical_and_old_manifests_are_mapped(tmp_path):
    with pytest.raises(ManifestError, match="split value.*'holdout'.*subset"):
        validate_table(clips_to_table([clip("a", split="holdout")]))
    old = write(tmp_path, {"clip_id": ["a", "b", "c", "d"], "task": ["tts"] * 4, "audio_path": ["a.wav"] * 4,
                           "transcript": ["hi"] * 4, "split": ["train-clean-100", "dev-other", "test-clean", "test"]})
    with pytest.warns(ManifestWarning, match="dev-other -> valid"):
        table = read_manifest(old)  # written before the subset column: still readable, and honest
    assert table["split"].to_pylist() == ["train", "valid", "test", "test"]
    assert table["subset"].to_pylist() == ["train-clean-100", "dev-other", "test-clean", None]
    assert table["words"].null_count == 4 and table["label"].null_count == 4


@pytest.mark.parametrize("problem", sorted(TIME_PROBLEMS))
def test_time_problem_of_one_row_agrees_with_row_warnings(problem):
    """Decode rejects a row with the problem its row warning names (issue 15, 5): one set of rules, two forms."""
    row = {"task": "v2s", "video_path": "v.mp4", **TRIGGERS[problem]}
    assert time_problem(row)[0] == problem
    clean = {"task": "v2s", "start_s": 0.0, "end_s": 5.0, "speech_start_s": 1.0, "speech_end_s": 4.0}
    assert time_problem(clean) is None
    assert time_problem({"task": "v2s", "start_s": -2.0, "end_s": -1.0})[0] == "negative_time"


def test_speech_span_without_window_is_fine():
    table = clips_to_table([clip("a", "visual_tts", transcript="hi", speech_start_s=0.2, speech_end_s=1.0)])
    assert row_warnings(table) == []
