"""Model arguments: a Hugging Face repo id is resolved from the local cache only (a clear error when it is not
there), and `pipeline models check` says what a folder is and which option it fits, by the loaders' own checks."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from pipeline.cli.app import app
from stages.model_dir import ModelDirError, check_model_dir, resolve_model_dir

runner = CliRunner()
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, tiny_clip, monkeypatch):
    """A Hugging Face cache holding acme/tiny-clip as `hf download` lays it out (refs/main -> snapshots/COMMIT)."""
    repo = tmp_path / "hub" / "models--acme--tiny-clip"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(tiny_clip, repo / "snapshots" / COMMIT / "vision")
    shutil.copytree(tiny_clip, repo / "snapshots" / COMMIT, dirs_exist_ok=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return repo / "snapshots" / COMMIT


def test_a_cached_repo_id_resolves_to_its_snapshot_and_an_absent_one_is_a_clear_error(hub_cache, monkeypatch):
    assert resolve_model_dir("acme/tiny-clip") == hub_cache
    assert check_model_dir("acme/tiny-clip/vision") == hub_cache / "vision"
    assert resolve_model_dir(f"acme/tiny-clip@{COMMIT}") == hub_cache
    with pytest.raises(ModelDirError, match=r"repo acme/clip-large is not in the local cache \(.*hub\)\. Nothing is "
                                            r"downloaded at run time"):
        check_model_dir("acme/clip-large")
    with pytest.raises(ModelDirError, match="has no folder 'vae'"):
        resolve_model_dir("acme/tiny-clip/vae")


def test_extract_records_the_folder_a_repo_id_resolved_to(hub_cache):
    from pipeline.jobs.extract import ExtractConfig, visual_info
    from stages.visual import VisualConfig

    info = visual_info(ExtractConfig(visual=VisualConfig(model_dir="acme/tiny-clip")))
    assert info["model_dir"] == str(hub_cache.resolve()) and info["dim"] == 32


def test_models_check_names_what_fits(hub_cache, tiny_vae, tmp_path):
    from model.vocoder import make_tiny_vocoder

    result = runner.invoke(app, ["models", "check", "acme/tiny-clip", "--for", "visual"])
    flat = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "from the Hugging Face cache" in flat and "fits visual" in flat and "RANDOMLY INITIALISED" in flat
    vocoder = make_tiny_vocoder(tmp_path / "vocoder")
    result = runner.invoke(app, ["models", "check", str(vocoder), "--for", "visual"])
    flat = " ".join(result.output.split())
    assert result.exit_code == 1 and "fits vocoder" in flat   # a HiFi-GAN config is no CLIP, whatever its defaults
    assert "'speecht5_hifigan' model (config.json model_type); the visual encoder is a CLIP model" in flat
    result = runner.invoke(app, ["models", "check", str(tiny_vae)])
    assert result.exit_code == 0 and "fits vae" in result.output
    result = runner.invoke(app, ["models", "check", str(tmp_path / "nothing-here")])
    assert result.exit_code == 1 and "nothing-here" in result.output
    result = runner.invoke(app, ["models", "check", str(vocoder), "--for", "speaker"])
    assert result.exit_code == 2 and "one of visual, vae, vocoder, asr, embedding" in result.output
