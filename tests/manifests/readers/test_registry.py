"""The registry: every format reachable through build_manifest, defaults filled, the result validated."""

from __future__ import annotations

import inspect

import pytest

from manifests.readers import FORMATS, READERS, build_manifest
from manifests.schema import MANIFEST_SCHEMA
from manifests.validate import ManifestError
from tests.manifests.helpers import REF_LINE, touch


def lhotse_cuts(tmp_path):
    from lhotse import AudioSource, CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recording = Recording(id="r", sources=[AudioSource(type="file", channels=[0], source=str(tmp_path / "r.wav"))],
                          sampling_rate=16000, num_samples=16000, duration=1.0)
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings([recording]), supervisions=SupervisionSet(
        [SupervisionSegment(id="s", recording_id="r", start=0.0, duration=1.0, text="hi")]))
    cuts.to_file(tmp_path / "cuts.jsonl.gz")
    return tmp_path / "cuts.jsonl.gz"


def test_build_manifest_dispatches_every_format(tmp_path, ljspeech, libritts, lrs2, grid):
    vgg = touch(tmp_path / "vgg.csv", "abc,1,dog,train\n")
    ref = touch(tmp_path / "ref.txt", REF_LINE.format(audio="a.wav", stem="a") + "\n")
    table_src = touch(tmp_path / "t.csv", "clip_id,video_path\nq,q.mp4\n")
    calls = {
        "ljspeech": (ljspeech, {}),
        "libritts": (libritts, {}),
        "vggsound": (vgg, {"video_dir": tmp_path}),
        "lrs2": (lrs2[0], {"media_root": lrs2[1]}),
        "grid": (grid, {}),
        "table": (table_src, {"defaults": {"task": "v2s"}}),
        "reference": (ref, {"task": "tts"}),
        "lhotse": (lhotse_cuts(tmp_path), {"data_root": tmp_path}),
    }
    assert set(calls) == set(READERS)
    for name, (source, kwargs) in calls.items():
        table = build_manifest(name, source, **kwargs)
        assert table.schema.equals(MANIFEST_SCHEMA) and table.num_rows >= 1, name
    assert build_manifest("ljspeech", ljspeech, defaults={"speaker": "LJ"})["speaker"].to_pylist() == ["LJ"] * 3
    with pytest.raises(ManifestError, match="unknown manifest format"):
        build_manifest("nope", tmp_path)
    dup = touch(tmp_path / "dup.csv", "clip_id,task\na,v2s\na,v2s\n")
    with pytest.raises(ManifestError, match="duplicate"):
        build_manifest("table", dup)
    with pytest.raises(ManifestError, match="gave no rows"):
        build_manifest("table", touch(tmp_path / "empty.csv", "clip_id,task\n"))


def test_every_format_declares_a_reader_whose_options_are_its_keywords():
    assert list(FORMATS) == list(READERS) and all(FORMATS[name].name == name for name in FORMATS)
    for reader in FORMATS.values():
        assert READERS[reader.name] is reader.read and reader.description
        keywords = inspect.signature(reader.read).parameters
        for option in reader.options:
            assert option.keyword in keywords, (reader.name, option.keyword)
            assert option.flag.startswith("--") and option.help and option.kind in ("path", "str", "pairs")
        assert len({option.flag for option in reader.options if option.flag != "--set"}) == \
            len([option for option in reader.options if option.flag != "--set"]), reader.name
