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
# Object storage in tests is the local S3 server below (moto, on 127.0.0.1): fake credentials, set before any Ray
# process starts so that every worker has them; the endpoint is forwarded by the jobs themselves.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(_name, None)
os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                   "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull})


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


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def keys(self, prefix: str) -> list[str]:
        import fsspec

        fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": self.endpoint}, use_listings_cache=False)
        return sorted(p.split("/", 1)[1] for p in fs.find(f"{self.bucket}/{prefix}"))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (moto's server mode) on 127.0.0.1 for the session, one bucket; the endpoint is
    set in this process's environment (AWS_ENDPOINT_URL), as a user would set it."""
    import socket
    import subprocess
    import sys
    import time

    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.1)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="vssflow")
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        yield S3(endpoint, "vssflow")
    finally:
        os.environ.pop("AWS_ENDPOINT_URL", None)
        proc.terminate()
        proc.wait(timeout=20)
