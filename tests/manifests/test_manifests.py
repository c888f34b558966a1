"""Manifests: validation, path safety, corpus readers and the `pipeline manifest` CLI (DESIGN §3)."""

from __future__ import annotations

import json
import os
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from manifests.paths import InvalidPath, PathEscapesRoot, check_media_paths, resolve_under_root
from manifests.readers import (
    READERS,
    build_manifest,
    grid_align_transcript,
    read_grid,
    read_libritts,
    read_ljspeech,
    read_lrs2_list,
    read_reference_list,
    read_table,
    read_vggsound,
    sanitize_clip_id,
)
from manifests.schema import MANIFEST_SCHEMA, Clip, clips_to_table, write_manifest
from manifests.validate import (
    ROW_PROBLEMS,
    ManifestError,
    ManifestWarning,
    read_manifest,
    row_warnings,
    validate_table,
)
from pipeline.cli.manifest import manifest_app


def touch(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def clip(clip_id="a", task="v2s", **kw):
    kw.setdefault("video_path", "v.mp4")
    return Clip(clip_id=clip_id, task=task, **kw)


def write(tmp_path, data: dict, name="m.parquet"):
    path = tmp_path / name
    pq.write_table(pa.table(data), path)
    return path


# ------------------------------------------------------------------------------------------- read/validate


def test_read_manifest_round_trip_conforms_schema(tmp_path):
    path = write_manifest([clip("a"), clip("b", "tts", video_path=None, audio_path="b.wav", transcript="hi")],
                          tmp_path / "m.parquet")
    table = read_manifest(path)
    assert table.schema.equals(MANIFEST_SCHEMA)
    assert table["clip_id"].to_pylist() == ["a", "b"]


def test_missing_optional_columns_become_null_and_extra_columns_are_dropped(tmp_path):
    path = write(tmp_path, {"clip_id": ["a", "b"], "task": ["v2s", "v2s"], "label": ["dog", "cat"],
                            "start_s": [1, 2]})  # int64 times cast to float64
    with pytest.warns(ManifestWarning, match="label"):
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
}


def test_every_row_problem_has_a_trigger():
    assert set(TRIGGERS) == set(ROW_PROBLEMS)


@pytest.mark.parametrize("problem", sorted(TRIGGERS))
def test_row_warning_is_produced(problem):
    kw = dict(TRIGGERS[problem])
    task = kw.pop("task", "v2s")
    if task != "v2s":
        kw.setdefault("transcript", "hello")
    table = clips_to_table([clip("clean", "visual_tts", transcript="hi", start_s=0.0, end_s=5.0,
                                 speech_start_s=1.0, speech_end_s=4.0), clip("bad", task, **kw)])
    found = row_warnings(table)
    assert [(w.row_index, w.clip_id, w.problem) for w in found] == [(1, "bad", problem)]


def test_speech_span_without_window_is_fine():
    table = clips_to_table([clip("a", "visual_tts", transcript="hi", speech_start_s=0.2, speech_end_s=1.0)])
    assert row_warnings(table) == []


# ----------------------------------------------------------------------------------------------- paths


def test_resolve_under_root_accepts_relative_and_absolute_inside(tmp_path):
    root = tmp_path / "data"
    touch(root / "a" / "x.wav")
    assert resolve_under_root(root, "a/x.wav") == (root / "a" / "x.wav").resolve()
    assert resolve_under_root(root, str(root / "a" / "x.wav")) == (root / "a" / "x.wav").resolve()
    assert resolve_under_root(root, "a/../a/x.wav") == (root / "a" / "x.wav").resolve()


@pytest.mark.parametrize("path", ["../outside.wav", "a/../../outside.wav", "/etc/passwd"])
def test_paths_escaping_root_are_refused(tmp_path, path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    with pytest.raises(PathEscapesRoot):
        resolve_under_root(tmp_path / "data", path)


def test_symlink_out_of_root_is_refused_and_inside_is_accepted(tmp_path):
    root = tmp_path / "data"
    touch(tmp_path / "secret.wav")
    touch(root / "real.wav")
    os.symlink(tmp_path / "secret.wav", root / "link_out.wav")
    os.symlink(root / "real.wav", root / "link_in.wav")
    os.symlink(tmp_path, root / "dir_out")
    with pytest.raises(PathEscapesRoot):
        resolve_under_root(root, "link_out.wav")
    with pytest.raises(PathEscapesRoot):
        resolve_under_root(root, "dir_out/secret.wav")
    assert resolve_under_root(root, "link_in.wav") == (root / "real.wav").resolve()


@pytest.mark.parametrize("path", ["", "   ", "a\x00b.wav"])
def test_empty_and_nul_paths_are_invalid(tmp_path, path):
    with pytest.raises(InvalidPath):
        resolve_under_root(tmp_path, path)
    assert issubclass(InvalidPath, ValueError) and issubclass(PathEscapesRoot, ValueError)


def test_check_media_paths(tmp_path):
    touch(tmp_path / "ok.mp4")
    table = clips_to_table([clip("ok", video_path="ok.mp4"), clip("gone", video_path="gone.mp4"),
                            clip("out", video_path="../x.mp4", audio_path="ok.mp4"), clip("nul", video_path="a\x00")])
    problems = [(p.clip_id, p.column, p.problem) for p in check_media_paths(table, tmp_path)]
    assert problems == [("gone", "video_path", "missing"), ("out", "video_path", "escapes_root"),
                        ("nul", "video_path", "invalid")]


# ------------------------------------------------------------------------------------------------ readers


def test_sanitize_clip_id():
    assert sanitize_clip_id("LJ001.0001") == "LJ001_0001"
    assert sanitize_clip_id("5535415699068794046/00001") == "5535415699068794046_00001"
    with pytest.raises(ManifestError):
        sanitize_clip_id("")


@pytest.fixture
def ljspeech(tmp_path):
    root = tmp_path / "LJSpeech-1.1"
    touch(root / "metadata.csv", "LJ001-0001|Printing, in 1869|Printing, in eighteen sixty-nine\n"
                                 "LJ001.0002|\"Quoted\" text|\"Quoted\" text\n\n"
                                 "LJ001-0003|Only two fields\n")
    for name in ("LJ001-0001", "LJ001.0002", "LJ001-0003"):
        touch(root / "wavs" / f"{name}.wav")
    return root


def test_read_ljspeech(ljspeech):
    clips = read_ljspeech(ljspeech)
    assert [c.clip_id for c in clips] == ["LJ001-0001", "LJ001_0002", "LJ001-0003"]
    assert clips[0].transcript == "Printing, in eighteen sixty-nine"
    assert clips[1].transcript == '"Quoted" text'
    assert clips[2].transcript == "Only two fields"
    assert clips[1].audio_path == "wavs/LJ001.0002.wav"
    assert {c.task for c in clips} == {"tts"} and {c.dataset for c in clips} == {"ljspeech"}
    assert read_ljspeech(ljspeech, text="raw")[0].transcript == "Printing, in 1869"
    assert read_ljspeech(ljspeech, data_root=ljspeech.parent)[0].audio_path == "LJSpeech-1.1/wavs/LJ001-0001.wav"


def test_ljspeech_errors(tmp_path, ljspeech):
    with pytest.raises(ManifestError, match="not under the data root"):
        read_ljspeech(ljspeech, data_root=tmp_path / "elsewhere")
    touch(ljspeech / "metadata.csv", "a.b|x|x\na_b|y|y\n")
    with pytest.raises(ManifestError, match="collide.*'a.b' and 'a_b' -> 'a_b'"):
        read_ljspeech(ljspeech)
    touch(ljspeech / "metadata.csv", "ok|x|x\nbroken\nx|1|2|3\n../up|x|x\n")
    with pytest.raises(ManifestError) as e:
        read_ljspeech(ljspeech)
    assert "3 malformed line(s)" in str(e.value)
    assert "line 2 has 1 field" in str(e.value) and "line 3 has 4 field" in str(e.value) and "line 4" in str(e.value)
    with pytest.raises(ManifestError, match="does not exist"):
        read_ljspeech(tmp_path / "nothing")


@pytest.fixture
def libritts(tmp_path):
    root = tmp_path / "LibriTTS"
    chapter = root / "train-clean-100" / "84" / "121123"
    touch(chapter / "84_121123_000007_000000.wav")
    touch(chapter / "84_121123_000007_000000.normalized.txt", "Hello there.\n")
    touch(chapter / "84_121123_000007_000000.original.txt", "HELLO there")
    touch(chapter / "84_121123_000008_000000.wav")
    touch(chapter / "84_121123_000008_000000.original.txt", "Only original.")
    touch(root / "dev-clean" / "1272" / "128104" / "1272_128104_000001_000000.wav")  # no transcript
    return root


def test_read_libritts(libritts):
    clips = read_libritts(libritts)
    rows = [(c.clip_id, c.split, c.speaker, c.transcript, c.audio_path) for c in clips]
    assert rows == [
        ("1272_128104_000001_000000", "dev-clean", "1272", None, "dev-clean/1272/128104/1272_128104_000001_000000.wav"),
        ("84_121123_000007_000000", "train-clean-100", "84", "Hello there.",
         "train-clean-100/84/121123/84_121123_000007_000000.wav"),
        ("84_121123_000008_000000", "train-clean-100", "84", "Only original.",
         "train-clean-100/84/121123/84_121123_000008_000000.wav"),
    ]
    one_split = read_libritts(libritts / "train-clean-100")
    assert [c.split for c in one_split] == ["train-clean-100"] * 2
    assert one_split[0].audio_path == "84/121123/84_121123_000007_000000.wav"
    assert {c.split for c in read_libritts(libritts, split="mine")} == {"mine"}


def test_libritts_errors(tmp_path, libritts):
    touch(libritts / "stray.wav")
    with pytest.raises(ManifestError, match="outside the LibriTTS layout.*stray.wav"):
        read_libritts(libritts)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no wav files"):
        read_libritts(tmp_path / "empty")


def test_read_vggsound(tmp_path):
    csv_path = touch(tmp_path / "vggsound.csv", '---g-f_I2yQ,1,"people marching, loudly",test\n'
                                                 "--0PQM4-hqg,30,waterfall burbling,train\n")
    clips = read_vggsound(csv_path, video_dir=tmp_path / "video")
    assert [(c.clip_id, c.video_path, c.split, c.task) for c in clips] == [
        ("---g-f_I2yQ_000001", "---g-f_I2yQ_000001.mp4", "test", "v2s"),
        ("--0PQM4-hqg_000030", "--0PQM4-hqg_000030.mp4", "train", "v2s"),
    ]
    assert all(c.start_s is None and c.end_s is None for c in clips)
    assert [c.clip_id for c in read_vggsound(csv_path, video_dir=tmp_path / "video", split="train")] == \
        ["--0PQM4-hqg_000030"]
    custom = read_vggsound(csv_path, video_dir=tmp_path / "video", data_root=tmp_path,
                           filename_pattern="{youtube_id}/{start}.mkv")
    assert custom[1].video_path == "video/--0PQM4-hqg/30.mkv"


def test_vggsound_errors(tmp_path):
    csv_path = touch(tmp_path / "vgg.csv", "abc,1,dog,train\nabc,x,dog,train\nabc,2,dog\n")
    with pytest.raises(ManifestError, match="2 malformed line.*line 2 start_seconds 'x'.*line 3 has 3 field"):
        read_vggsound(csv_path, video_dir=tmp_path)
    csv_path = touch(tmp_path / "vgg.csv", "abc,1,dog,train\nabc,1,dog,test\n")
    with pytest.raises(ManifestError, match="collide"):
        read_vggsound(csv_path, video_dir=tmp_path)


@pytest.fixture
def lrs2(tmp_path):
    main = tmp_path / "lrs2" / "main"
    touch(main / "5535415699068794046" / "00001.mp4")
    touch(main / "5535415699068794046" / "00001.txt", "Text:  WHEN YOU'RE COOKING CHIPS\nConf:  4\n")
    touch(main / "6330311066473698535" / "00011.mp4")  # no transcript file
    listing = touch(tmp_path / "lrs2" / "test.txt", "5535415699068794046/00001 NF\n\n6330311066473698535/00011 MV\n")
    return listing, main


def test_read_lrs2_list(lrs2):
    listing, main = lrs2
    clips = read_lrs2_list(listing, media_root=main)
    assert [(c.clip_id, c.video_path, c.transcript, c.split, c.task, c.speaker) for c in clips] == [
        ("5535415699068794046_00001", "5535415699068794046/00001.mp4", "WHEN YOU'RE COOKING CHIPS", "test",
         "visual_tts", None),
        ("6330311066473698535_00011", "6330311066473698535/00011.mp4", None, "test", "visual_tts", None),
    ]
    assert read_lrs2_list(listing, media_root=main, split="x", video_ext=".avi")[0].video_path.endswith("00001.avi")
    custom = read_lrs2_list(listing, media_root=main, transcript_fn=lambda root, item: item.upper(),
                            speaker_fn=lambda item: item.split("/")[0])
    assert custom[1].transcript == "6330311066473698535/00011" and custom[1].speaker == "6330311066473698535"


def test_lrs2_errors(lrs2, tmp_path):
    listing, main = lrs2
    touch(main / "5535415699068794046" / "00001.txt", "WORDS WITHOUT PREFIX\n")
    with pytest.raises(ManifestError, match="should start with 'Text:'"):
        read_lrs2_list(listing, media_root=main)
    bad = touch(tmp_path / "bad.txt", "../../etc/00001\n")
    with pytest.raises(ManifestError, match="bad.txt line 1.*not a plain relative name"):
        read_lrs2_list(bad, media_root=main)
    with pytest.raises(ManifestError, match="lists no clips"):
        read_lrs2_list(touch(tmp_path / "empty.txt", "\n"), media_root=main)


GRID_ALIGN = "0 23750 sil\n23750 29500 bin\n29500 34000 blue\n34000 35500 sp\n35500 41000 at\n41000 74500 sil\n"


@pytest.fixture
def grid(tmp_path):
    root = tmp_path / "grid"
    touch(root / "s1" / "bbaf2n.mpg")
    touch(root / "s1" / "align" / "bbaf2n.align", GRID_ALIGN)
    touch(root / "s2" / "lgaz5a.mpg")  # no alignment
    return root


def test_read_grid(grid, tmp_path):
    clips = read_grid(grid)
    first, second = clips
    assert (first.clip_id, first.speaker, first.video_path, first.transcript) == \
        ("s1_bbaf2n", "s1", "s1/bbaf2n.mpg", "bin blue at")
    assert first.speech_start_s == pytest.approx(0.95) and first.speech_end_s == pytest.approx(1.64)
    assert (second.clip_id, second.speaker, second.transcript) == ("s2_lgaz5a", "s2", None)
    listed = read_grid(grid, list_path=touch(tmp_path / "grid.txt", "s1/bbaf2n\n"))
    assert [c.clip_id for c in listed] == ["s1_bbaf2n"]


def test_grid_align_errors(tmp_path):
    assert grid_align_transcript(tmp_path / "none.align") is None
    assert grid_align_transcript(touch(tmp_path / "sil.align", "0 100 sil\n")).text == ""
    with pytest.raises(ManifestError, match="line 2"):
        grid_align_transcript(touch(tmp_path / "bad.align", "0 100 sil\n100 x bin\n"))
    with pytest.raises(ManifestError, match="no .mpg files"):
        read_grid(tmp_path)


def test_read_table_csv(tmp_path):
    path = touch(tmp_path / "clips.csv", "id,file,text,start,other\n00042,a.mp4,hi,1.5,x\n00043,b.mp4,,,y\n")
    table = read_table(path, mapping={"clip_id": "id", "video_path": "file", "transcript": "text", "start_s": "start"},
                       defaults={"task": "visual_tts", "dataset": "mine"})
    assert table.schema.equals(MANIFEST_SCHEMA)
    assert table["clip_id"].to_pylist() == ["00042", "00043"]
    assert table["task"].to_pylist() == ["visual_tts"] * 2
    assert table["transcript"].to_pylist() == ["hi", None]
    assert table["start_s"].to_pylist() == [1.5, None]


def test_read_table_jsonl_and_defaults_fill_only_nulls(tmp_path):
    rows = [{"clip_id": "a", "task": "tts", "audio_path": "a.wav", "end_s": 2},
            {"clip_id": "b", "audio_path": "b.wav"}]
    path = touch(tmp_path / "clips.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    table = read_table(path, defaults={"task": "v2s", "start_s": "0.5"})
    assert table["task"].to_pylist() == ["tts", "v2s"]
    assert table["start_s"].to_pylist() == [0.5, 0.5]
    assert table["end_s"].to_pylist() == [2.0, None]


def test_read_table_errors(tmp_path):
    path = touch(tmp_path / "c.csv", "id,task\na,v2s\n")
    with pytest.raises(ManifestError, match="no column.*nope"):
        read_table(path, mapping={"clip_id": "nope"})
    with pytest.raises(ManifestError, match="mapping names column.*label"):
        read_table(path, mapping={"label": "id"})
    with pytest.raises(ManifestError, match="no clip_id column"):
        read_table(path)
    with pytest.raises(ManifestError, match="cannot be read as double"):
        read_table(path, mapping={"clip_id": "id"}, defaults={"start_s": "soon"})
    with pytest.raises(ManifestError, match="unknown table format"):
        read_table(touch(tmp_path / "c.xlsx", "x"))


REF_LINE = "{audio}|feat/clip/{stem}.npy|feat/spk/{stem}.npy|feat/lip/{stem}.npy|feat/sync/{stem}.npy|1 2 3|h ə l"


def test_read_reference_list(tmp_path):
    lines = [REF_LINE.format(audio="/corpora/lrs2/a/x.1.wav", stem="x.1"), REF_LINE.format(audio="b/y.wav", stem="y")]
    path = touch(tmp_path / "train.txt", "\n".join(lines) + "\n")
    clips = read_reference_list(path, task="visual_tts", dataset="lrs2", data_root="/corpora",
                                video_pattern="videos/{stem}.mp4")
    assert [(c.clip_id, c.audio_path, c.video_path, c.task, c.transcript) for c in clips] == [
        ("x_1", "lrs2/a/x.1.wav", "videos/x.1.mp4", "visual_tts", None),
        ("y", "b/y.wav", "videos/y.mp4", "visual_tts", None),
    ]
    assert read_reference_list(path, task="v2s")[0].audio_path == "/corpora/lrs2/a/x.1.wav"
    assert read_reference_list(path, task="v2s")[0].video_path is None


def test_reference_list_errors(tmp_path):
    good = REF_LINE.format(audio="a.wav", stem="a")
    path = touch(tmp_path / "l.txt", f"{good}\na.wav|x|y\n{good}|extra\n")
    with pytest.raises(ManifestError) as e:
        read_reference_list(path, task="tts")
    assert "line 2 has 3 field(s)" in str(e.value) and "line 3 has 8 field(s)" in str(e.value)
    with pytest.raises(ManifestError, match="task 'speech'"):
        read_reference_list(path, task="speech")
    path = touch(tmp_path / "l.txt", f"{good}\n" + REF_LINE.format(audio="other/a.wav", stem="a") + "\n")
    with pytest.raises(ManifestError, match="collide"):
        read_reference_list(path, task="tts")


def test_build_manifest_dispatches_every_format(tmp_path, ljspeech, libritts, lrs2, grid):
    vgg = touch(tmp_path / "vgg.csv", "abc,1,dog,train\n")
    ref = touch(tmp_path / "ref.txt", REF_LINE.format(audio="a.wav", stem="a") + "\n")
    table_src = touch(tmp_path / "t.csv", "clip_id,video_path\nq,q.mp4\n")
    calls = {
        "ljspeech": (ljspeech, {}),
        "libritts": (libritts, {}),
        "vggsound": (vgg, {"video_dir": tmp_path}),
        "lrs2": (lrs2[0], {"media_root": lrs2[1]}),
        "grid": (grid, {}),
        "table": (table_src, {"defaults": {"task": "v2s"}}),
        "reference": (ref, {"task": "tts"}),
    }
    assert set(calls) == set(READERS)
    for name, (source, kwargs) in calls.items():
        table = build_manifest(name, source, **kwargs)
        assert table.schema.equals(MANIFEST_SCHEMA) and table.num_rows >= 1, name
    assert build_manifest("ljspeech", ljspeech, defaults={"speaker": "LJ"})["speaker"].to_pylist() == ["LJ"] * 3
    with pytest.raises(ManifestError, match="unknown manifest format"):
        build_manifest("nope", tmp_path)
    dup = touch(tmp_path / "dup.csv", "clip_id,task\na,v2s\na,v2s\n")
    with pytest.raises(ManifestError, match="duplicate"):
        build_manifest("table", dup)
    with pytest.raises(ManifestError, match="gave no rows"):
        build_manifest("table", touch(tmp_path / "empty.csv", "clip_id,task\n"))


# ----------------------------------------------------------------------------------------------------- CLI

runner = CliRunner()


def flat(output: str) -> str:
    """CLI output with rich's box borders and line wrapping undone, for substring checks."""
    return " ".join(output.replace("│", " ").split())


def test_cli_build_then_validate(tmp_path, ljspeech):
    out = tmp_path / "lj.parquet"
    result = runner.invoke(manifest_app, ["build", "ljspeech", str(ljspeech), "--out", str(out),
                                          "--set", "speaker=LJ", "--split", "train"])
    assert result.exit_code == 0, result.output
    assert "3 rows" in flat(result.output) and "no row warnings" in flat(result.output)
    table = read_manifest(out)
    assert table["speaker"].to_pylist() == ["LJ"] * 3 and table["split"].to_pylist() == ["train"] * 3

    result = runner.invoke(manifest_app, ["validate", str(out), "--data-root", str(ljspeech)])
    assert result.exit_code == 0, result.output
    output = flat(result.output)
    assert "tts" in output and "ljspeech" in output and "all media paths exist" in output

    result = runner.invoke(manifest_app, ["build", "ljspeech", str(ljspeech), "--out", str(out)])
    assert result.exit_code == 2 and "--force" in flat(result.output)


def test_cli_build_table_with_map(tmp_path):
    src = touch(tmp_path / "clips.csv", "id,file\nx1,v/x1.mp4\n")
    out = tmp_path / "t.parquet"
    result = runner.invoke(manifest_app, ["build", "table", str(src), "--out", str(out),
                                          "--map", "clip_id=id", "--map", "video_path=file", "--set", "task=v2s"])
    assert result.exit_code == 0, result.output
    assert read_manifest(out).to_pylist()[0]["video_path"] == "v/x1.mp4"


@pytest.mark.parametrize("args, message", [
    (["--video-dir", "x"], "--video-dir not used by format 'ljspeech'"),
    (["--map", "nonsense"], "expected COLUMN=VALUE"),
])
def test_cli_build_refuses_bad_options(tmp_path, ljspeech, args, message):
    result = runner.invoke(manifest_app, ["build", "ljspeech", str(ljspeech), "--out", str(tmp_path / "o.parquet"),
                                          *args])
    assert result.exit_code == 2 and message in flat(result.output)


def test_cli_build_reference_needs_task_and_reports_manifest_errors(tmp_path):
    ref = touch(tmp_path / "ref.txt", "a.wav|x|y\n")
    result = runner.invoke(manifest_app, ["build", "reference", str(ref), "--out", str(tmp_path / "o.parquet")])
    assert result.exit_code == 2 and "--set task=" in flat(result.output)
    result = runner.invoke(manifest_app, ["build", "reference", str(ref), "--out", str(tmp_path / "o.parquet"),
                                          "--set", "task=tts"])
    assert result.exit_code == 1 and "error:" in flat(result.output) and "line 1 has 3 field(s)" in flat(result.output)
    assert not (tmp_path / "o.parquet").exists()


def test_cli_validate_errors_and_warnings(tmp_path):
    dup = write_manifest([clip("a"), clip("a")], tmp_path / "dup.parquet")
    result = runner.invoke(manifest_app, ["validate", str(dup)])
    assert result.exit_code == 1
    assert "duplicate clip_id" in flat(result.output) and "'a' at rows 0, 1" in flat(result.output)

    result = runner.invoke(manifest_app, ["validate", str(touch(tmp_path / "x.parquet", "not parquet"))])
    assert result.exit_code == 1 and "not a readable Parquet manifest" in flat(result.output)

    touch(tmp_path / "data" / "here.mp4")
    m = write_manifest([clip("here", video_path="here.mp4"), clip("gone", video_path="gone.mp4"),
                        clip("late", video_path="here.mp4", start_s=5.0, end_s=1.0)], tmp_path / "m.parquet")
    result = runner.invoke(manifest_app, ["validate", str(m), "--data-root", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "start_not_before_end: 1" in flat(result.output) and "late (row 2)" in flat(result.output)
    assert "missing: 1" in flat(result.output) and "gone" in flat(result.output)
    result = runner.invoke(manifest_app, ["validate", str(m), "--data-root", str(tmp_path / "data"), "--strict"])
    assert result.exit_code == 1 and "2 problem(s)" in flat(result.output)


def test_cli_help_has_examples():
    for command in ("build", "validate"):
        result = runner.invoke(manifest_app, [command, "--help"])
        assert result.exit_code == 0 and f"pipeline manifest {command}" in flat(result.output)


def test_cli_validate_shows_read_notes(tmp_path):
    path = write(tmp_path, {"clip_id": ["a"], "task": ["v2s"], "video_path": ["v.mp4"], "label": ["dog"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CLI must capture the warning, not leak it
        result = runner.invoke(manifest_app, ["validate", str(path)])
    assert result.exit_code == 0 and "note:" in flat(result.output) and "label" in flat(result.output)
