"""Shared fixtures: one Ray session for the whole run, one sample corpus, tiny models built and saved locally."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

# A developer's shell must not point the suite at a real cluster (or send its token anywhere).
for _name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_JOB_SUBMISSION_ADDRESS", "RAY_AUTH_TOKEN",
              "RAY_AUTH_TOKEN_PATH"):
    os.environ.pop(_name, None)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep every Ray socket on loopback
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass(frozen=True)
class Corpus:
    root: Path
    manifest: Path
    expected: dict
    progress_calls: tuple = ()    # the clip ids make_sample_corpus reported, in order

    def good_ids(self) -> set[str]:
        return {k for k, v in self.expected.items() if v["outcome"] == "ok"}

    def reject_ids(self) -> set[str]:
        return {k for k, v in self.expected.items() if v["outcome"] == "reject"}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    from pipeline.demo.sample_corpus import make_sample_corpus

    root = tmp_path_factory.mktemp("corpus")
    calls: list[str] = []
    manifest = make_sample_corpus(root, seed=0, scale=1, include_bad=True, progress=calls.append)
    return Corpus(root, manifest, json.loads((root / "expected.json").read_text()), tuple(calls))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    from stages.visual import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory) -> Path:
    from stages.latent import make_tiny_vae

    return make_tiny_vae(tmp_path_factory.mktemp("models") / "tiny-vae")


@pytest.fixture(scope="module")
def one_torch_thread():
    """The test machines are shared: one intra-op thread is several times faster than two contending ones."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray on loopback, shared by every test that needs it."""
    import ray

    from pipeline.jobs.ray_exec import init_ray

    init_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()


SHARD_SIZE = 4


def extract_config(model_dir, **kw):
    from pipeline.jobs.extract import ExtractConfig
    from stages.visual import VisualConfig

    return ExtractConfig(visual=VisualConfig(model_dir=str(model_dir)), shard_size=SHARD_SIZE, **kw)


@pytest.fixture(scope="session")
def extracted(corpus, tiny_clip, ray_session, tmp_path_factory):
    """The sample corpus extracted once through Ray: (output folder, report). Tests must not modify it."""
    from pipeline.jobs.extract import run_extract

    out = tmp_path_factory.mktemp("extract")
    report = run_extract(manifest=corpus.manifest, data_root=corpus.root, out_dir=out,
                         config=extract_config(tiny_clip))
    return out, report


@pytest.fixture(scope="session")
def mixed(extracted, tmp_path_factory):
    """Twelve mixtures of the extracted corpus made once by synth-mix: (output folder, report). Do not modify."""
    from pipeline.jobs.synth_mix import SynthMixConfig, run_synth_mix

    src, _ = extracted
    out = tmp_path_factory.mktemp("mix")
    report = run_synth_mix(speech_dirs=[src], sound_dirs=[src], out_dir=out,
                           config=SynthMixConfig(count=12, seed=0, shard_size=SHARD_SIZE))
    return out, report
