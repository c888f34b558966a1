"""A unit's shard as a worker writes it: a sample that cannot be written becomes a reject row, the rest of the
unit is written, and the unit's result records its shard's size and checksum (computed from the bytes written)."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from manifests.errors import PipelineError
from manifests.validate import validate_table
from pipeline.jobs.assemble import UnitWork, UnitWriter, make_unit
from pipeline.jobs.extract import extract_index, extract_sample
from pipeline.jobs.ledger import Ledger
from pipeline.jobs.ray_exec import decode_result
from pipeline.jobs.runner import _Recorder
from stages.base import Stage
from stages.format.contract import read_dataset_json
from stages.format.layout import file_checksum
from stages.format.shard_io import iter_samples


def extract_row(sample: dict, unit: int) -> dict:
    """A finished extract row (what the stages hand the driver) rebuilt from a stored sample."""
    meta = sample["meta"]
    source = meta["source"]
    return {"clip_id": sample["key"], "task": meta["task"], "dataset": meta["dataset"], "split": meta["split"],
            "speaker": meta["speaker"], "transcript": meta["transcript"], "phonemes": meta["phonemes"],
            "duration_s": meta["duration_s"], "audio_duration_s": meta["audio_duration_s"],
            "video_duration_s": meta["video_duration_s"], "cut": meta["cut"], "video_path": source["video_path"],
            "audio_path": source["audio_path"], "start_s": source["start_s"], "end_s": source["end_s"],
            "source_sample_rate": source["sample_rate"], "source_channels": source["channels"],
            "speech_start_s": None, "speech_end_s": None, "loudness_lufs": meta["loudness_lufs"],
            "gain_db": meta["gain_db"], "peak_limited": meta["peak_limited"], "silent": meta["silent"],
            "video": sample["arrays"]["video"], "mel": sample["arrays"]["mel"], "latent": sample["arrays"]["latent"],
            "phone_ids": sample["arrays"]["phones"], "flac": sample["flac"], "unit": unit,
            "reject_stage": None, "reject_reason": None, "reject_detail": None}


def test_a_sample_that_cannot_be_written_is_a_reject_not_a_failure(extracted, tmp_path):
    src, _ = extracted
    contract, _ = read_dataset_json(src)
    good, other = list(iter_samples(sorted((src / "shards").glob("*.tar"))[:1]))[:2]
    rows = [extract_row(good, 0), extract_row(other, 0)]
    rows[1]["speaker"] = b"\xff\xfe"                  # not text: K.json cannot hold it
    writer = UnitWriter(job="extract", out_root=tmp_path, unit=0, contract=contract, to_sample=extract_sample,
                        to_index=extract_index)
    writer.add(rows)
    result = writer.finish()
    summary = result.summary
    assert (summary["kept"], summary["rejected"], summary["reasons"]) == (1, 1, {"write/unwritable_sample": 1})
    assert [s["key"] for s in iter_samples([tmp_path / summary["shard"]])] == [good["key"]]
    assert summary["shard_sha256"] == file_checksum(tmp_path / summary["shard"])
    assert summary["shard_size"] == (tmp_path / summary["shard"]).stat().st_size
    (reject,) = result.rejects
    assert reject["clip_id"] == other["key"] and reject["detail"].startswith("ValueError: could not convert")


def test_the_clip_id_rule_is_the_shard_key_rule():
    import pyarrow as pa

    from manifests.schema import MANIFEST_SCHEMA
    from stages.format.shard_io import sample_members

    table = pa.Table.from_pylist([{"clip_id": "_hidden", "task": "tts"}, {"clip_id": "ok-1_a", "task": "tts"}],
                                 schema=MANIFEST_SCHEMA)
    with pytest.raises(PipelineError, match=r"not starting with '_'\): '_hidden' at row 0"):
        validate_table(table)
    with pytest.raises(ValueError, match="follow the clip_id rule"):
        sample_members("_hidden", {}, {}, None)
    assert sample_members("ok-1_a", {"task": "tts"}, {}, None)["__key__"] == "ok-1_a"


def test_a_sample_breaking_the_contract_is_a_write_reject(extracted, tmp_path):
    src, _ = extracted
    contract, _ = read_dataset_json(src)
    sample = next(s for s in iter_samples(sorted((src / "shards").glob("*.tar"))) if s["arrays"]["video"] is not None)
    row = extract_row(sample, 0)
    row["video"] = row["video"][:, :-1]               # one feature short of dataset.json's video_dim
    writer = UnitWriter(job="extract", out_root=tmp_path, unit=0, contract=contract, to_sample=extract_sample,
                        to_index=extract_index)
    writer.add([row])
    result = writer.finish()
    assert result.summary["reasons"] == {"write/contract_violation": 1} and result.summary["kept"] == 0
    (reject,) = result.rejects
    assert f"video: dim {contract.video_dim - 1} != {contract.video_dim}" in reject["detail"]


def test_a_stage_error_in_a_worker_reaches_the_job_log(extracted, tmp_path, caplog):
    """A stage that raises on one row rejects that row in the worker, and the driver writes the error (row, stage,
    exception) to the job log at warning level, so a cluster user sees it without opening rejects.parquet."""
    class Breaks(Stage):
        name = "breaks"

        def process(self, row):
            if row["clip_id"] == broken:
                raise RuntimeError("codec state lost")

    src, _ = extracted
    contract, _ = read_dataset_json(src)
    good, other = list(iter_samples(sorted((src / "shards").glob("*.tar"))[:1]))[:2]
    broken = other["key"]
    rows = [extract_row(good, 0), extract_row(other, 0)]
    work = UnitWork(job="extract", out_root=tmp_path, contract=contract, to_sample=extract_sample,
                    to_index=extract_index, stages=(Breaks(),), rows_per_chunk=2)
    result = make_unit(0, rows, work, list(work.stages))
    assert result.errors == [f"{broken}: breaks: RuntimeError: codec state lost"]
    text = json.dumps(dataclasses.asdict(result), default=str)
    recorder = _Recorder(Ledger(tmp_path), {0: 2}, {good["key"]: "a", broken: "b"}, 2, None, None)
    with caplog.at_level(logging.WARNING, logger="pipeline.jobs"):
        recorder.record(text, decode_result(text))
    assert f"unit 0: unexpected error in a stage (the row is rejected): {broken}: breaks: RuntimeError: codec " \
           "state lost" in caplog.text
