"""`pipeline manifest build` and `validate`: options per format, messages for mistakes, notes and warnings."""

from __future__ import annotations

import warnings

import pytest
import typer.main
from typer.testing import CliRunner

from manifests.readers import FORMATS
from manifests.schema import write_manifest
from manifests.validate import read_manifest
from pipeline.cli.manifest import READER_FLAGS, manifest_app
from tests.manifests.helpers import REF_LINE, clip, make_ljspeech, touch, write

runner = CliRunner()


def flat(output: str) -> str:
    """CLI output with rich's box borders and line wrapping undone, for substring checks."""
    return " ".join(output.replace("│", " ").split())


@pytest.fixture
def ljspeech(tmp_path):
    return make_ljspeech(tmp_path)


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
    path = write(tmp_path, {"clip_id": ["a"], "task": ["v2s"], "video_path": ["v.mp4"], "category": ["dog"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the CLI must capture the warning, not leak it
        result = runner.invoke(manifest_app, ["validate", str(path)])
    assert result.exit_code == 0 and "note:" in flat(result.output) and "category" in flat(result.output)


# ------------------------------------------------------------------------------ options from the registry

FLAG_VALUES = {"path": "somewhere", "str": "x", "pairs": "a=b"}  # a well-formed value of each kind


def test_every_reader_flag_is_a_build_option_of_one_kind():
    build = typer.main.get_command(manifest_app).commands["build"]
    flags = {flag for param in build.params for flag in param.opts}
    for flag, takers in READER_FLAGS.items():
        assert flag in flags, flag
        assert len({option.kind for _, option in takers}) == 1, flag


@pytest.mark.parametrize("format, flag", [(name, flag) for name, reader in FORMATS.items() for flag in READER_FLAGS
                                          if flag not in {option.flag for option in reader.options}])
def test_cli_build_refuses_each_option_a_format_does_not_take(tmp_path, format, flag):
    kind = READER_FLAGS[flag][0][1].kind
    result = runner.invoke(manifest_app, ["build", format, str(tmp_path), "--out", str(tmp_path / "o.parquet"),
                                          flag, FLAG_VALUES[kind]])
    assert result.exit_code == 2 and f"{flag} not used by format '{format}'" in flat(result.output)


@pytest.mark.parametrize("format, message", [
    ("vggsound", "vggsound needs --video-dir"),
    ("lrs2", "lrs2 needs --media-root"),
    ("reference", "reference lists need the task: --set task=v2s|visual_tts|tts|joint"),
])
def test_cli_build_names_a_missing_required_option(tmp_path, format, message):
    required = [option for option in FORMATS[format].options if option.required]
    assert required
    result = runner.invoke(manifest_app, ["build", format, str(tmp_path), "--out", str(tmp_path / "o.parquet")])
    assert result.exit_code == 2 and message in flat(result.output)


def test_cli_build_pattern_is_each_formats_own_keyword(tmp_path):
    vgg = touch(tmp_path / "vgg.csv", "abc,1,dog,train\n")
    out = tmp_path / "vgg.parquet"
    result = runner.invoke(manifest_app, ["build", "vggsound", str(vgg), "--out", str(out), "--video-dir",
                                          str(tmp_path), "--pattern", "{youtube_id}/{start}.mkv"])
    assert result.exit_code == 0, result.output
    assert read_manifest(out)["video_path"].to_pylist() == ["abc/1.mkv"]
    ref = touch(tmp_path / "ref.txt", REF_LINE.format(audio="a/x.wav", stem="x") + "\n")
    out = tmp_path / "ref.parquet"
    result = runner.invoke(manifest_app, ["build", "reference", str(ref), "--out", str(out), "--set", "task=v2s",
                                          "--pattern", "videos/{stem}.mp4"])
    assert result.exit_code == 0, result.output
    table = read_manifest(out)
    assert table["video_path"].to_pylist() == ["videos/x.mp4"] and table["task"].to_pylist() == ["v2s"]


def test_cli_grid_align_pattern_and_lrs2_max_seconds(tmp_path):
    from tests.manifests.helpers import make_grid_release, make_lrs2_pretrain

    root = make_grid_release(tmp_path)
    (root / "alignments").rename(root / "al")
    out = tmp_path / "grid.parquet"
    result = runner.invoke(manifest_app, ["build", "grid", str(root), "--out", str(out)])
    assert result.exit_code == 1 and "--align-pattern" in flat(result.output)
    result = runner.invoke(manifest_app, ["build", "grid", str(root), "--out", str(out),
                                          "--align-pattern", "al/{speaker}/{utterance}.align"])
    assert result.exit_code == 0, result.output
    assert read_manifest(out)["transcript"].to_pylist() == ["bin blue at"] * 3
    listing, media = make_lrs2_pretrain(tmp_path)
    result = runner.invoke(manifest_app, ["build", "lrs2", str(listing), "--media-root", str(media),
                                          "--max-seconds", "15", "--out", str(tmp_path / "l.parquet")])
    assert result.exit_code == 0 and "train pretrain 2" in flat(result.output)
    result = runner.invoke(manifest_app, ["build", "ljspeech", str(root), "--align-pattern", "x", "--out",
                                          str(tmp_path / "x.parquet")])
    assert result.exit_code == 2 and "--align-pattern not used by format 'ljspeech'" in flat(result.output)
