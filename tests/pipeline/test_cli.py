"""The `pipeline` command as a user meets it: help with examples, clear failures, inspect and its plot."""

from __future__ import annotations

import pyarrow as pa
from typer.testing import CliRunner

from manifests.schema import Clip, write_manifest
from pipeline.cli.app import app

runner = CliRunner()


def every_command() -> list[list[str]]:
    """Every command path of the app, groups included (walked, so a new command cannot be forgotten here)."""
    import typer

    found, todo = [], [([], typer.main.get_command(app))]
    while todo:
        path, command = todo.pop()
        found.append(path)
        if hasattr(command, "commands"):   # a group
            todo += [([*path, name], sub) for name, sub in command.commands.items()]
    return sorted(found)


def test_every_command_has_help_with_examples():
    """Each help renders (a help text with rich markup like `[/X]` crashes it) and each leaf shows examples."""
    import typer

    commands = every_command()
    assert ["export"] in commands and ["models", "check"] in commands and ["run", "evaluate"] in commands
    for command in commands:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
        target = typer.main.get_command(app)
        for name in command:
            target = target.commands[name]
        if not hasattr(target, "commands"):
            assert "Example" in result.output, command


def run_extract_cli(*args):
    return runner.invoke(app, ["run", "extract", *map(str, args)])


def test_missing_visual_model_fails_before_work_naming_the_path(corpus, tmp_path):
    result = run_extract_cli("--manifest", corpus.manifest, "--data-root", corpus.root, "--out", tmp_path / "o",
                             "--visual-model", tmp_path / "no-such-model")
    assert result.exit_code == 1
    assert "no-such-model" in result.output and "Hugging Face layout" in result.output
    assert not (tmp_path / "o").exists()


def test_no_visual_model_says_what_to_pass(corpus, tmp_path):
    result = run_extract_cli("--manifest", corpus.manifest, "--data-root", corpus.root, "--out", tmp_path / "o")
    assert result.exit_code == 1 and "--visual-model" in result.output


def test_duplicate_ids_and_unknown_tasks_stop_the_job_with_rows_named(tiny_clip, tmp_path):
    manifest = write_manifest([Clip(clip_id="a", task="tts", audio_path="a.wav"),
                               Clip(clip_id="a", task="tts", audio_path="b.wav"),
                               Clip(clip_id="c", task="speech", audio_path="c.wav")], tmp_path / "m.parquet")
    result = run_extract_cli("--manifest", manifest, "--data-root", tmp_path, "--out", tmp_path / "o",
                             "--visual-model", tiny_clip)
    said = " ".join(result.output.split())
    assert result.exit_code == 1
    assert "1 duplicate clip_id(s): 'a' at rows 0, 1" in said, said
    assert "unknown task value(s) 'speech' in 1 row(s): row 2" in said, said


def test_missing_required_column(tiny_clip, tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"clip_id": ["a"]}), tmp_path / "m.parquet")
    result = run_extract_cli("--manifest", tmp_path / "m.parquet", "--data-root", tmp_path, "--out", tmp_path / "o",
                             "--visual-model", tiny_clip)
    assert result.exit_code == 1 and "task" in result.output


def test_unknown_config_key_is_an_error(corpus, tiny_clip, tmp_path):
    (tmp_path / "c.yaml").write_text("visual:\n  batchframes: 3\n")
    result = run_extract_cli("--manifest", corpus.manifest, "--data-root", corpus.root, "--out", tmp_path / "o",
                             "--visual-model", tiny_clip, "--config", tmp_path / "c.yaml")
    assert result.exit_code == 2 and "batchframes" in result.output          # a config error is a usage error


def test_inspect_counts_one_sample_and_a_plot(extracted, tmp_path):
    out, report = extracted
    result = runner.invoke(app, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "RANDOM TEST ENCODER" in result.output and "decode/missing_file" in result.output
    said = " ".join(result.output.split())
    assert "uint8 88x88 mouth at 25 fps, crops" in said and "256-d resemblyzer" in said
    png = tmp_path / "s.png"
    key = "visual_tts_enus_webmvp9_000"
    result = runner.invoke(app, ["inspect", str(out), "--key", key, "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "mel.npy" in result.output and "float16" in result.output and "contract" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    result = runner.invoke(app, ["inspect", str(out), "--key", "nope"])
    assert result.exit_code == 1 and "no sample 'nope'" in result.output


def test_the_plot_draws_every_timed_stream_a_later_contract_adds(extracted, tmp_path):
    import matplotlib.pyplot as plt
    import numpy as np

    from pipeline.inspect import describe_sample, plot_sample, plot_streams

    out, _ = extracted
    sample = describe_sample(out, "visual_tts_enus_webmvp9_000")
    assert sample["arrays"]["lip"].ndim == 3                                     # mouth crops [T, S, S]
    assert plot_streams(sample["arrays"]) == ["mel", "video", "lip"]           # phones, lip_valid: not time axes
    before = plt.imread(plot_sample(sample, tmp_path / "before.png")).shape[0]
    sample["arrays"]["later"] = np.random.default_rng(0).normal(size=(25, 8)).astype(np.float16)
    assert plot_streams(sample["arrays"]) == ["mel", "video", "later", "lip"]
    after = plt.imread(plot_sample(sample, tmp_path / "after.png")).shape[0]
    assert after > before * 1.3                                                # one panel more


def test_missing_vae_dir_fails_before_work(corpus, tiny_clip, tmp_path):
    result = run_extract_cli("--manifest", corpus.manifest, "--data-root", corpus.root, "--out", tmp_path / "o",
                             "--visual-model", tiny_clip, "--vae", tmp_path / "no-vae")
    assert result.exit_code == 1 and "no-vae" in result.output
    assert not (tmp_path / "o").exists()
