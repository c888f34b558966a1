"""`pipeline run synth-mix` as a user runs it: several speech folders, source filters, mode weights, latent
sources, the "nothing to mix" error, and a kill -9 in the middle followed by a resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from typer.testing import CliRunner

from pipeline.cli.app import app
from stages.format.shard_io import iter_samples
from tests.pipeline.test_synth_mix_job import digests, mix

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def synth_mix(*args) -> tuple[int, str]:
    result = runner.invoke(app, ["run", "synth-mix", *map(str, args)])
    crash = "" if result.exception is None or isinstance(result.exception, SystemExit) else repr(result.exception)
    return result.exit_code, " ".join((result.output + crash).split())        # a crash shows, not an empty line


def test_several_speech_folders_filters_and_mode_weights(extracted, tmp_path):
    src = extracted[0]
    second = tmp_path / "second"
    shutil.copytree(src, second)
    config = tmp_path / "mix.yaml"
    config.write_text("mix:\n  mode_weights: {insert: 1.0}\nsound:\n  min_seconds: 2.9\n")
    out = tmp_path / "out"
    code, said = synth_mix("--speech", src, "--speech", second, "--sound", src, "--out", out, "--count", 24,
                           "--shard-size", 8, "--config", config)
    assert code == 0, said
    recipes = pq.read_table(out / "mixtures.parquet").to_pylist()
    assert len(recipes) == 24
    folders = {str(Path(r["speech_shard"]).parent.parent) for r in recipes}
    assert folders == {str(src.resolve()), str(second.resolve())}          # both speech folders are drawn from
    index = {r["key"]: r for r in pq.read_table(src / "index.parquet").to_pylist()}
    assert all(index[r["sound_key"]]["duration_s"] >= 2.9 for r in recipes)  # the sound filter held
    for r in recipes:                                 # insert alone was weighted; TTS speech can only be sound_only
        assert r["mode"] == ("insert" if index[r["speech_key"]]["has_video"] else "sound_only"), r
    assert {r["mode"] for r in recipes} == {"insert", "sound_only"}


def test_nothing_to_mix_is_a_usage_error(extracted, tmp_path):
    config = tmp_path / "mix.yaml"
    config.write_text("speech:\n  datasets: [no-such-corpus]\n")
    code, said = synth_mix("--speech", extracted[0], "--sound", extracted[0], "--out", tmp_path / "out", "--count",
                           4, "--config", config)
    assert code == 2 and "no sources to mix: 0 speech and" in said, said
    assert not (tmp_path / "out" / "mixtures.parquet").exists()


def test_latent_sources_are_mixed_with_their_vae(extracted, tiny_vae, tmp_path):
    from tests.shard_tools import with_latents

    src = with_latents(extracted[0], tmp_path / "latent", tiny_vae)
    out = tmp_path / "out"
    code, said = synth_mix("--speech", src, "--sound", src, "--out", out, "--count", 4, "--shard-size", 4,
                           "--vae", tiny_vae)
    assert code == 0, said
    samples = list(iter_samples(sorted((out / "shards").glob("*.tar"))))
    assert len(samples) == 4
    for s in samples:
        latent = s["arrays"]["latent"]
        assert latent.dtype == np.float16 and latent.shape == (len(s["arrays"]["mel"]) // 4, 256)
    result = runner.invoke(app, ["mix", "rebuild", str(out), "--key", samples[0]["key"], "--vae", str(tiny_vae)])
    assert result.exit_code == 0, result.output


def test_killed_synth_mix_resumes_to_the_same_shards(extracted, tmp_path):
    """kill -9 the whole CLI job once its first unit is done; the re-run ends with the shards of an
    uninterrupted run, byte for byte."""
    src = extracted[0]
    reference = mix(src, tmp_path / "reference", 24)
    out = tmp_path / "killed"
    log = tmp_path / "killed.log"
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "synth-mix", "--speech", str(src), "--sound", str(src),
           "--out", str(out), "--count", "24", "--shard-size", "4"]
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    units = out / "_work" / "units"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(units.glob("*.done.json")):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list(units.glob("*.done.json")))
    assert 1 <= done_at_kill < 6, f"kill landed at {done_at_kill}/6 units:\n{log.read_text()[-3000:]}"
    code, said = synth_mix("--speech", src, "--sound", src, "--out", out, "--count", 24, "--shard-size", 4)
    assert code == 0, said
    report = json.loads((out / "report.json").read_text())
    assert report["this_run"]["units_done_before"] == done_at_kill
    assert report["counts"]["kept"] == reference["counts"]["kept"] and report["counts"]["unaccounted"] == 0
    assert digests(out) == digests(tmp_path / "reference")
