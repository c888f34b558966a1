"""Workers write the shards: the bytes are the ones the driver used to write from the same rows, a shard holds
samples of one task, and the driver receives summaries, not samples. Plus the options a cluster user tries a job
with: --dry-run, --limit, --max-reject-frac, --log-level and plain progress lines."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from manifests.schema import write_manifest
from manifests.validate import read_manifest
from pipeline.cli.app import app
from pipeline.jobs.extract import cpu_stages, extract_sample, visual_stage, words_as_json
from stages.base import is_alive
from stages.format.contract import check_sample, read_dataset_json
from stages.format.layout import OutputDir
from stages.format.shard_io import AtomicShardWriter, sample_members
from tests.conftest import SHARD_SIZE
from tests.conftest import extract_config as config


def driver_written_shard(rows: list[dict], path, contract) -> str:
    """What the driver wrote before workers did (the UnitAssembler of earlier versions): every kept row of the
    unit, in plan order, checked against the contract and serialised into one tar. Its sha256."""
    with AtomicShardWriter(path) as writer:
        for row in rows:
            if not is_alive(row):
                continue
            meta, arrays, flac = extract_sample(row)
            assert check_sample(meta, arrays, contract) == []
            writer.write(sample_members(row["clip_id"], meta, arrays, flac))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_worker_written_shards_are_the_bytes_the_driver_used_to_write(corpus, tiny_clip, extracted, tmp_path,
                                                                      one_torch_thread):
    out, _ = extracted
    contract, _ = read_dataset_json(out)
    cfg = config(tiny_clip)
    plan = OutputDir(out).plan()
    manifest = words_as_json(read_manifest(corpus.manifest))
    rows = plan.join(manifest, keys="clip_id").sort_by([("unit", "ascending"), ("position", "ascending")])
    index = pq.read_table(out / "index.parquet")
    video_unit = index.filter(pc.equal(index["task"], "v2s"))["unit"][0].as_py()
    speech_unit = index.filter(pc.equal(index["task"], "visual_tts"))["unit"][0].as_py()
    stages = cpu_stages(cfg, corpus.root) + [visual_stage(cfg, 1)]   # the fused worker's stages, one thread
    for unit in (video_unit, speech_unit):
        unit_rows = rows.filter(pc.equal(rows["unit"], unit)).to_pylist()
        finished = []
        for i in range(0, len(unit_rows), cfg.rows_per_task):            # the worker's chunks
            chunk = unit_rows[i:i + cfg.rows_per_task]
            for stage in stages:
                chunk = stage(chunk)
            finished += chunk
        shard = f"shards/extract-{unit:06d}.tar"
        expected = driver_written_shard(finished, tmp_path / f"{unit}.tar", contract)
        assert hashlib.sha256((out / shard).read_bytes()).hexdigest() == expected, shard


def test_a_shard_holds_samples_of_one_task(extracted):
    index = pq.read_table(extracted[0] / "index.parquet").to_pylist()
    tasks: dict[str, set] = {}
    for row in index:
        tasks.setdefault(row["shard"], set()).add(row["task"])
    assert len({t for ts in tasks.values() for t in ts}) > 1 and all(len(ts) == 1 for ts in tasks.values()), tasks


def test_the_driver_receives_summaries_not_samples(extracted):
    run = extracted[1]["this_run"]
    assert 0 < run["driver_bytes_per_row"] < 1024, run
    shard_bytes = extracted[1]["counts"]["bytes"] / extracted[1]["counts"]["kept"]
    assert shard_bytes > 20 * run["driver_bytes_per_row"]     # what a sample weighs against what the driver gets


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def small_manifest(corpus, tmp_path_factory):
    """Six rows, one of them rejected (a missing file)."""
    table = pq.read_table(corpus.manifest)
    ids = sorted(corpus.good_ids())[:5] + ["bad_missing_file"]
    path = tmp_path_factory.mktemp("small") / "m.parquet"
    return write_manifest(table.filter(pc.is_in(table["clip_id"], value_set=pa.array(ids))), path)


def test_dry_run_prints_the_plan_and_writes_nothing(corpus, tiny_clip, small_manifest, ray_session, tmp_path,
                                                    s3_server):
    for out in (tmp_path / "dry", s3_server.url("dry")):
        code, said = cli("run", "extract", "--manifest", small_manifest, "--data-root", corpus.root, "--out", out,
                         "--visual-model", tiny_clip, "--shard-size", SHARD_SIZE, "--dry-run")
        said = " ".join(said.replace("│", " ").split())
        assert code == 0, said
        assert "dry run: nothing written" in said and "6 in the input, 6 not planned yet" in said
        assert "placement fused" in said and "MB of shards" in said
    assert not (tmp_path / "dry").exists() and s3_server.keys("dry") == []


def test_limit_reject_share_log_level_and_plain_progress(corpus, tiny_clip, small_manifest, ray_session, tmp_path):
    out = tmp_path / "tried"
    code, said = cli("run", "extract", "--manifest", small_manifest, "--data-root", corpus.root, "--out", out,
                     "--visual-model", tiny_clip, "--shard-size", 2, "--limit", 4, "--max-reject-frac", 0.1,
                     "--log-level", "debug")
    report = json.loads((out / "report.json").read_text())
    assert report["this_run"]["limit"] == 4 and report["this_run"]["rows_todo"] == 4
    rejected = report["counts"]["rejected"]
    first_four = pq.read_table(small_manifest)["clip_id"].to_pylist()[:4]
    assert rejected == int("bad_missing_file" in first_four)
    assert "extract: 4/4 rows (100%)" in said and "rows/s" in said and "rejected so far" in said  # not a terminal
    assert "DEBUG pipeline.jobs: unit 0:" in said
    code_all, said_all = cli("run", "extract", "--manifest", small_manifest, "--data-root", corpus.root, "--out",
                             out, "--visual-model", tiny_clip, "--shard-size", 2, "--max-reject-frac", 0.1)
    said_all = " ".join(said_all.split())
    assert code_all == 1 and "1 of 6 rows rejected (16.7%), more than --max-reject-frac 0.1" in said_all
    assert json.loads((out / "report.json").read_text())["counts"]["rows"] == 6    # the summary is written
    assert code == (1 if rejected else 0)
