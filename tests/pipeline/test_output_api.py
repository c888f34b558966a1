"""`pipeline.open_output`: every sample decoded, filters through the index, random access by key and position,
streams a later contract adds, and a damaged shard named instead of a shorter dataset."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import soundfile as sf

import pipeline
from manifests.errors import UsageError
from stages.format.layout import DamagedShard, SampleNotFound
from stages.format.shard_io import iter_samples
from tests.shard_tools import rerecord_shards


def test_iteration_yields_every_indexed_sample_decoded_in_index_order(extracted):
    out_dir, report = extracted
    out = pipeline.open_output(out_dir)
    index = pq.read_table(out_dir / "index.parquet")
    samples = list(out)
    assert [s.key for s in samples] == index["key"].to_pylist() and len(out) == report["counts"]["kept"]
    plain = {s["key"]: s for s in iter_samples(sorted((out_dir / "shards").glob("*.tar")))}   # plain webdataset
    for sample in samples:
        raw = plain[sample.key]
        assert sample.meta == raw["meta"] and sample.task == raw["meta"]["task"]
        for name, array in raw["arrays"].items():
            assert (name in sample.arrays) == (array is not None)
            if array is not None:
                assert sample.arrays[name].dtype == array.dtype and np.array_equal(sample.arrays[name], array)
        wave, rate = sf.read(io.BytesIO(raw["flac"]), dtype="float32")
        assert sample.sample_rate == rate == 16000 and np.array_equal(sample.audio, wave)


def test_filters_and_random_access_agree_with_the_index(extracted):
    out_dir, _ = extracted
    out = pipeline.open_output(out_dir)
    index = out.index
    tts = out.filter(task="tts")
    assert tts.keys() == index.filter(pc.equal(index["task"], "tts"))["key"].to_pylist() and len(tts) > 0
    assert all(s.task == "tts" for s in tts)
    speech = out.filter(task=["tts", "visual_tts"], split="train")
    assert {s.task for s in speech} == {"tts", "visual_tts"} and all(s.meta["split"] == "train" for s in speech)
    long_ones = out.filter(pc.field("duration_s") > 2.0)
    assert len(long_ones) and all(s.meta["duration_s"] > 2.0 for s in long_ones)
    assert len(out.filter(label=None)) == index["label"].null_count
    key = index["key"][len(index) // 2].as_py()
    by_key, by_position = out[key], out[len(index) // 2]
    assert by_key.key == by_position.key == key and np.array_equal(by_key.arrays["mel"], by_position.arrays["mel"])
    assert key in out and "nope" not in out and out[-1].key == index["key"][-1].as_py()
    with pytest.raises(SampleNotFound, match="no sample 'nope'"):
        out["nope"]
    with pytest.raises(SampleNotFound, match="filtered view"):
        tts[index.filter(pc.equal(index["task"], "v2s"))["key"][0].as_py()]
    with pytest.raises(UsageError, match="no column"):
        out.filter(speling="x")
    with pytest.raises(IndexError):
        out[len(out)]


def copy_output(out_dir, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(out_dir, copy, ignore=shutil.ignore_patterns("_work*"))
    return copy


def test_a_stream_a_later_contract_adds_is_read_like_the_others(extracted, tmp_path):
    """A K.NAME.npy member the reader has never heard of (issue 10's lip stream, say) comes back in arrays."""
    out_dir = copy_output(extracted[0], tmp_path)
    index = pq.read_table(out_dir / "index.parquet")
    key, shard = index["key"][0].as_py(), out_dir / index["shard"][0].as_py()
    lip = np.arange(12, dtype=np.uint8).reshape(3, 4)
    buf = io.BytesIO()
    np.save(buf, lip)
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
            if info.name == f"{key}.json":
                extra = tarfile.TarInfo(f"{key}.lip.npy")
                extra.size = len(buf.getvalue())
                tar.addfile(extra, io.BytesIO(buf.getvalue()))
    rerecord_shards(out_dir)
    sample = pipeline.open_output(out_dir)[key]
    assert np.array_equal(sample.arrays["lip"], lip) and "mel" in sample.arrays
    from typer.testing import CliRunner

    from pipeline.cli.app import app
    from pipeline.inspect import describe_sample, plot_streams

    result = CliRunner().invoke(app, ["inspect", str(out_dir), "--key", key, "--plot", str(tmp_path / "s.png")])
    assert result.exit_code == 0 and "lip.npy" in result.output and "uint8 [3, 4]" in result.output, result.output
    assert plot_streams(describe_sample(out_dir, key)["arrays"])[-1] == "lip"    # inspect --plot draws it too


def test_a_damaged_shard_is_named_not_skipped(extracted, tmp_path):
    out_dir = copy_output(extracted[0], tmp_path)
    index = pq.read_table(out_dir / "index.parquet")
    shard = out_dir / index["shard"][0].as_py()
    with open(shard, "r+b") as f:   # same size, other bytes: only the checksum tells
        f.seek(700)
        f.write(b"\xff" * 16)
    assert len(list(pipeline.open_output(out_dir).filter(shard=index["shard"][-1].as_py()))) > 0
    with pytest.raises(DamagedShard, match="checksum differs"):
        list(pipeline.open_output(out_dir, verify=True))
    shard.write_bytes(shard.read_bytes()[:1024])
    with pytest.raises(DamagedShard, match=f"{shard.name} is damaged: size 1024 bytes"):
        pipeline.open_output(out_dir)[index["key"][0].as_py()]
    assert json.loads((out_dir / "dataset.json").read_text())["job"] == "extract"


def readme_block(marker: str) -> str:
    """The fenced python block that follows `marker` in README.md."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "README.md").read_text()
    after = text[text.index(marker):]
    start = after.index("```python\n") + len("```python\n")
    return after[start: after.index("```", start)]


def test_the_readme_webdataset_example_reads_every_sample_with_torchaudio_2_11(extracted):
    """The README's plain-webdataset block, run as written on a real output: its FLAC decoder works where
    webdataset's `torch_audio` cannot (torchaudio 2.11 has no file I/O without torchcodec)."""
    out_dir, _ = extracted
    code = readme_block("<!-- webdataset-example")
    assert code.count('"shards/ljs/') == 1
    seen: dict = {}
    code = code.replace('"shards/ljs/', f'"{out_dir}/') + "\n    seen[sample['__key__']] = " \
        "(wave, rate, mel, meta)\n"
    exec(compile(code, "README.md", "exec"), {"seen": seen})
    out = pipeline.open_output(out_dir)
    assert sorted(seen) == sorted(out.keys())
    for key, (wave, rate, mel, meta) in seen.items():
        sample = out[key]
        assert rate == sample.sample_rate and np.array_equal(wave, sample.audio) and meta == sample.meta
        assert mel.dtype == np.float16 and np.array_equal(mel, sample.arrays["mel"])
