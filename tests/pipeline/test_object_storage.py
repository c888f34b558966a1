"""Outputs on object storage, against a real S3-compatible server on 127.0.0.1 (moto's server mode, tests/conftest.py):
extract and synth-mix write there, the trainer reads from there, a killed run resumes, plain webdataset reads the
shards back, and one run at a time holds an output's lease."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from manifests import storage
from pipeline.errors import OutputBusy
from pipeline.jobs.extract import run_extract
from pipeline.status import output_status
from stages.format.contract import check_sample, conditions_carried, read_dataset_json
from stages.format.layout import OutputDir
from tests.conftest import SHARD_SIZE
from tests.conftest import extract_config as config

REPO = Path(__file__).resolve().parents[2]


def s3_digests(s3, prefix: str) -> dict[str, str]:
    fs = storage.filesystem(s3.url(prefix))
    return {key.rsplit("/", 1)[1]: hashlib.sha256(fs.cat_file(f"{s3.bucket}/{key}")).hexdigest()
            for key in s3.keys(f"{prefix}/shards/")}


def local_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*.tar"))}


def placed(folder) -> tuple[list, list]:
    out = OutputDir(folder)
    index = out.read_index(["key", "shard"]).to_pylist()
    rejects = pq.read_table(fsspec.open(str(out.rejects)).open() if out.remote else out.rejects,
                            columns=["clip_id", "stage", "reason"]).to_pylist()
    return index, rejects


@pytest.fixture(scope="module")
def s3_extract(s3_server, corpus, tiny_clip, extracted, tmp_path_factory):
    """The sample corpus extracted to S3 the hard way: a CLI run killed with SIGKILL once units are finished,
    then resumed (after its lease, given a short time to live, expired). (url, report, units done at the kill)."""
    url = s3_server.url("extract")
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "extract", "--manifest", str(corpus.manifest),
           "--data-root", str(corpus.root), "--out", url, "--visual-model", str(tiny_clip),
           "--shard-size", str(SHARD_SIZE)]
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(REPO), "VSSFLOW_LEASE_TTL_S": "3"}
    log = tmp_path_factory.mktemp("s3-killed") / "killed-run.log"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not OutputDir(url).done_units():
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = len(OutputDir(url).done_units())
    total_units = len(local_digests(extracted[0]))
    assert 1 <= done_at_kill < total_units, f"kill landed at {done_at_kill}/{total_units}:\n{log.read_text()[-3000:]}"
    assert "extract/_work.lease" in s3_server.keys("extract/")      # the dead run's lease is still there

    deadline = time.time() + 60
    while True:                                                     # refused until the lease expires
        try:
            report = run_extract(manifest=corpus.manifest, data_root=corpus.root, out_dir=url,
                                 config=config(tiny_clip))
            break
        except OutputBusy as e:
            assert "another run is writing" in str(e) and time.time() < deadline, str(e)
            time.sleep(0.5)
    return url, report, done_at_kill


def test_killed_run_on_s3_resumes_to_the_shards_a_local_run_writes(s3_server, s3_extract, extracted):
    """No partial object is ever visible; the re-run did only what was missing; the bytes are a local run's."""
    url, report, done_at_kill = s3_extract
    total_units = len(local_digests(extracted[0]))
    assert report["this_run"]["units_done_before"] == done_at_kill
    assert report["this_run"]["units_written"] == total_units - done_at_kill
    assert report["counts"]["unaccounted"] == 0 and report["out"] == url
    assert placed(url) == placed(extracted[0])                 # same keys in the same shards, same rejects
    assert s3_digests(s3_server, "extract") == local_digests(extracted[0])   # byte for byte
    keys = s3_server.keys("extract/")
    assert "extract/_work.lease" not in keys                    # released at the end of the run
    assert not [k for k in keys if k.endswith(".tmp")]
    assert {"extract/dataset.json", "extract/index.parquet", "extract/rejects.parquet", "extract/report.json"} \
        <= set(keys)
    status = output_status(url, verify=True)                   # `pipeline status s3://...`: checksums re-read
    assert status["units_done"] == status["units_planned"] == status["shards"] == total_units
    assert status["damaged_units"] == {} and status["runs"] == 1   # the killed run never finished


def test_s3_shards_read_back_with_plain_webdataset(s3_server, s3_extract, corpus):
    """A user reads the shards with webdataset alone: a gopen handler for s3:// opening them through fsspec."""
    import importlib

    import webdataset as wds

    gopen = importlib.import_module("webdataset.gopen")

    url, _, _ = s3_extract
    contract, _ = read_dataset_json(url)
    shards = [s3_server.url("extract", "shards", k.rsplit("/", 1)[1]) for k in s3_server.keys("extract/shards/")]
    options = {"client_kwargs": {"endpoint_url": s3_server.endpoint}}
    gopen.gopen_schemes["s3"] = lambda u, mode="rb", bufsize=8192, **kw: fsspec.open(u, mode, **options).open()
    try:
        samples = list(wds.WebDataset(shards, shardshuffle=False, empty_check=False).decode())
    finally:
        del gopen.gopen_schemes["s3"]
    assert {s["__key__"] for s in samples} == corpus.good_ids()
    for s in samples:
        names = {"mel", "latent", "phones", *conditions_carried(contract)}   # video, lip, lip_valid, speaker, ...
        names |= {f"{n}_valid" for n, stream in contract.all_streams().items() if stream.get("valid")}
        arrays = {name: s.get(f"{name}.npy") for name in names}
        assert check_sample(s["json"], arrays, contract) == [], s["__key__"]


def test_synth_mix_reads_sources_from_s3_and_writes_there(s3_server, s3_extract):
    from pipeline.jobs.synth_mix import SynthMixConfig, run_synth_mix
    from stages.format.shard_io import iter_samples

    source, _, _ = s3_extract
    out = s3_server.url("mix")
    report = run_synth_mix(speech_dirs=[source], sound_dirs=[source], out_dir=out,
                           config=SynthMixConfig(count=8, shard_size=4))
    assert (report["counts"]["kept"], report["counts"]["rejected"]) == (8, 0)
    contract, _ = read_dataset_json(out)
    samples = list(iter_samples(OutputDir(out).shard_files()))
    assert len(samples) == 8
    for s in samples:
        assert check_sample(s["meta"], s["arrays"], contract) == []
        assert s["meta"]["recipe"]["speech_shard"].startswith(f"{source}/shards/")


def test_pretrain_streams_its_shards_from_s3(s3_extract, tmp_path, one_torch_thread):
    from model.metrics import read_metrics
    from model.train import run_pretrain
    from tests.model.helpers import tiny

    url, _, _ = s3_extract
    run_pretrain([url], tmp_path / "run", tiny(steps=4, eval_every=4, save_every=4))
    losses = [m["loss"] for m in read_metrics(tmp_path / "run") if "loss" in m]
    assert losses and all(v == v for v in losses)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["data"]["dirs"] == [url]


def test_one_writer_per_output_on_s3(s3_server):
    """A live lease refuses a second run; an expired one (its run crashed) is taken over, and the run that
    lost it finds out at its next renewal instead of writing on."""
    from pipeline.jobs.lease import ObjectLease

    location = s3_server.url("leased", "_work.lease")
    first = ObjectLease(location, ttl_s=60)
    first.acquire()
    with pytest.raises(OutputBusy, match="another run is writing"):
        ObjectLease(location, ttl_s=60).acquire()
    first.release()
    assert not storage.exists(location)

    stalled = ObjectLease(location, ttl_s=1)
    stalled.acquire()
    stalled._stop.set()                                   # a driver that stopped renewing (stalled, or killed)
    time.sleep(1.5)
    taker = ObjectLease(location, ttl_s=60)
    taker.acquire()                                       # expired: taken over with a conditional write
    assert json.loads(storage.read_bytes(location))["owner"] == taker.owner
    assert stalled.renew() is False
    with pytest.raises(OutputBusy, match="taken by another run"):
        stalled.check()
    taker.release()


def test_extract_reads_its_media_from_s3(s3_server, corpus, tiny_clip, extracted, ray_session, tmp_path):
    """A data root on object storage: media are fetched per row (and deleted after decoding); a missing object and
    a path leaving the root are the same rejects as on a local disk."""
    import tempfile

    import pyarrow as pa
    import pyarrow.compute as pc

    from manifests.schema import write_manifest
    from stages.format.shard_io import iter_samples

    table = pq.read_table(corpus.manifest)
    good = sorted(corpus.good_ids())[:4]
    rows = table.filter(pc.is_in(table["clip_id"], value_set=pa.array(good + ["bad_missing_file",
                                                                              "bad_path_escape"])))
    manifest = write_manifest(rows, tmp_path / "m.parquet")
    fs = storage.filesystem(s3_server.url())
    for row in rows.filter(pc.is_in(rows["clip_id"], value_set=pa.array(good))).to_pylist():
        for column in ("video_path", "audio_path"):
            if row[column]:
                fs.put_file(str(corpus.root / row[column]), f"{s3_server.bucket}/corpus/{row[column]}")
    out = tmp_path / "out"
    report = run_extract(manifest=manifest, data_root=s3_server.url("corpus"), out_dir=out, config=config(tiny_clip))
    assert report["counts"]["kept"] == 4
    rejects = {r["clip_id"]: r["reason"] for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    assert rejects == {"bad_missing_file": "missing_file", "bad_path_escape": "path_escapes_root"}
    local = {s["key"]: s for s in iter_samples(sorted((extracted[0] / "shards").glob("*.tar")))}
    for s in iter_samples(sorted((out / "shards").glob("*.tar"))):
        assert s["meta"] == local[s["key"]]["meta"] and s["flac"] == local[s["key"]]["flac"]
    assert not list(Path(tempfile.gettempdir()).glob("vssflow-media-*/*"))
