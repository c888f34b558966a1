"""The dataset card: `datasets` loads every config of a real output from local files (no network) with the same
samples the project's reader gives; shards that mix tasks are left out and named; licences come from the corpora
the readers declare; `wids-index.json` gives random access by position."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
import yaml

import pipeline
from pipeline.card import MIXED_SPLITS, licence_rows, plan_configs


def front_matter(out_dir) -> dict:
    text = (out_dir / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_configs_hold_single_task_shards_by_split_and_mixed_ones_are_left_out():
    index = pa.table({"shard": ["a", "a", "b", "b", "c", "c", "d", "e"],
                      "task": ["tts", "tts", "tts", "v2s", "v2s", "v2s", "tts", "v2s"],
                      "split": ["train", "train", "train", "train", "train", "test", "test", None]})
    configs, left_out = plan_configs(index)
    assert configs == {"tts": {"train": ["a"], "test": ["d"]}, "v2s": {MIXED_SPLITS: ["c", "e"]}}
    assert left_out == {"b": ["tts", "v2s"]}


def test_licences_come_from_the_corpora_the_readers_declare():
    rows, licence = licence_rows({"libritts": 3, "grid": 2})
    assert licence == "cc-by-4.0" and "openslr.org/60" in rows[1] and "CC BY 4.0" in rows[0]
    rows, licence = licence_rows({"libritts": 3, "lrs2": 1})
    assert licence == "other" and "non-commercial" in rows[1]
    rows, licence = licence_rows({"libritts": 3, "my_corpus": 1})
    assert licence == "unknown" and "not recorded" in rows[1]


def test_datasets_loads_every_config_with_the_samples_the_reader_gives(extracted, tmp_path):
    import datasets

    out_dir, _ = extracted
    index = pq.read_table(out_dir / "index.parquet")
    tasks_of: dict[str, set] = {}
    for shard, task in zip(index["shard"].to_pylist(), index["task"].to_pylist()):
        tasks_of.setdefault(shard, set()).add(task)
    meta = front_matter(out_dir)
    listed = {c["config_name"]: {f["split"]: f["path"] for f in c["data_files"]} for c in meta["configs"]}
    in_configs = {s for splits in listed.values() for shards in splits.values() for s in shards}
    assert in_configs == {s for s, tasks in tasks_of.items() if len(tasks) == 1} and listed
    card = (out_dir / "README.md").read_text()
    for shard in (s for s, tasks in tasks_of.items() if len(tasks) > 1):
        assert f"`{shard}`: {', '.join(sorted(tasks_of[shard]))}" in card
    out = pipeline.open_output(out_dir)
    for config, splits in listed.items():
        loaded = datasets.load_dataset(str(out_dir), config, cache_dir=str(tmp_path / "hf"))
        assert set(loaded) == set(splits)
        for split, shards in splits.items():
            rows = loaded[split]
            assert rows["__key__"] == out.filter(shard=shards).keys()
            for row in rows:
                sample = out[row["__key__"]]
                assert row["json"] == {k: sample.meta.get(k) for k in row["json"]} and sample.task == config
                assert set(sample.meta) <= set(row["json"])
                assert split == MIXED_SPLITS or sample.meta["split"] == split
                for name, array in sample.arrays.items():
                    assert np.array_equal(np.asarray(row[f"{name}.npy"], array.dtype), array), name
                wave, rate = sf.read(io.BytesIO(row["audio.flac"]), dtype="float32")
                assert rate == sample.sample_rate and np.array_equal(wave, sample.audio)


def test_the_wids_index_gives_every_sample_by_position(extracted, tmp_path):
    import wids

    out_dir, _ = extracted
    keys = pq.read_table(out_dir / "index.parquet")["key"].to_pylist()
    spec = json.loads((out_dir / "wids-index.json").read_text())
    assert spec["__kind__"] == "wids-shard-index-v1" and sum(s["nsamples"] for s in spec["shardlist"]) == len(keys)
    ds = wids.ShardListDataset(str(out_dir / "wids-index.json"), cache_dir=str(tmp_path / "wids"))
    assert len(ds) == len(keys)
    assert [ds[i]["__key__"] for i in range(len(keys))] == keys
