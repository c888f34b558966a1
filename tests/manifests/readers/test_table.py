"""The table reader: CSV/JSONL columns mapped onto the manifest, defaults filling nulls."""

from __future__ import annotations

import json

import pytest

from manifests.readers import read_table
from manifests.schema import MANIFEST_SCHEMA
from manifests.validate import ManifestError
from tests.manifests.helpers import touch


def test_read_table_csv(tmp_path):
    path = touch(tmp_path / "clips.csv", "id,file,text,start,other\n00042,a.mp4,hi,1.5,x\n00043,b.mp4,,,y\n")
    table = read_table(path, mapping={"clip_id": "id", "video_path": "file", "transcript": "text", "start_s": "start"},
                       defaults={"task": "visual_tts", "dataset": "mine"})
    assert table.schema.equals(MANIFEST_SCHEMA)
    assert table["clip_id"].to_pylist() == ["00042", "00043"]
    assert table["task"].to_pylist() == ["visual_tts"] * 2
    assert table["transcript"].to_pylist() == ["hi", None]
    assert table["start_s"].to_pylist() == [1.5, None]


def test_read_table_jsonl_and_defaults_fill_only_nulls(tmp_path):
    rows = [{"clip_id": "a", "task": "tts", "audio_path": "a.wav", "end_s": 2},
            {"clip_id": "b", "audio_path": "b.wav"}]
    path = touch(tmp_path / "clips.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    table = read_table(path, defaults={"task": "v2s", "start_s": "0.5"})
    assert table["task"].to_pylist() == ["tts", "v2s"]
    assert table["start_s"].to_pylist() == [0.5, 0.5]
    assert table["end_s"].to_pylist() == [2.0, None]


def test_read_table_errors(tmp_path):
    path = touch(tmp_path / "c.csv", "id,task\na,v2s\n")
    with pytest.raises(ManifestError, match="no column.*nope"):
        read_table(path, mapping={"clip_id": "nope"})
    with pytest.raises(ManifestError, match="mapping names column.*category"):
        read_table(path, mapping={"category": "id"})
    with pytest.raises(ManifestError, match="no clip_id column"):
        read_table(path)
    with pytest.raises(ManifestError, match="cannot be read as double"):
        read_table(path, mapping={"clip_id": "id"}, defaults={"start_s": "soon"})
    with pytest.raises(ManifestError, match="unknown table format"):
        read_table(touch(tmp_path / "c.xlsx", "x"))
