"""The VGGSound reader: csv rows with quoted labels, canonical splits, split filter, file name pattern, malformed
lines."""

from __future__ import annotations

import pytest

from manifests.readers import read_vggsound
from manifests.validate import ManifestError
from tests.manifests.helpers import VGGSOUND_CSV, touch


def test_labels_are_kept(tmp_path):
    clips = read_vggsound(touch(tmp_path / "vggsound.csv", VGGSOUND_CSV), video_dir=tmp_path / "video")
    assert [(c.label, c.split, c.subset) for c in clips] == [
        ("people marching", "test", "test"), ("waterfall burbling", "train", "train"),
        ("male speech, man speaking", "train", "train"), ("female singing", "train", "train"),
        ("dog barking", "test", "test")]


def test_unknown_pattern_fields_are_a_clear_error(tmp_path):
    csv_path = touch(tmp_path / "vggsound.csv", VGGSOUND_CSV)
    for pattern, detail in (("{ytid}_{start}.mp4", "KeyError"), ("{youtube_id}_{start:q}.mp4", "ValueError"),
                            ("{0}.mp4", "IndexError")):
        with pytest.raises(ManifestError, match=f"pattern .* is not usable \\({detail}.*fields are {{youtube_id}}"):
            read_vggsound(csv_path, video_dir=tmp_path, filename_pattern=pattern)


def test_read_vggsound(tmp_path):
    csv_path = touch(tmp_path / "vggsound.csv", '---g-f_I2yQ,1,"people marching, loudly",test\n'
                                                 "--0PQM4-hqg,30,waterfall burbling,train\n")
    clips = read_vggsound(csv_path, video_dir=tmp_path / "video")
    assert [(c.clip_id, c.video_path, c.split, c.task) for c in clips] == [  # "people marching, loudly" quoted
        ("---g-f_I2yQ_000001", "---g-f_I2yQ_000001.mp4", "test", "v2s"),
        ("--0PQM4-hqg_000030", "--0PQM4-hqg_000030.mp4", "train", "v2s"),
    ]
    assert all(c.start_s is None and c.end_s is None for c in clips)
    assert [c.clip_id for c in read_vggsound(csv_path, video_dir=tmp_path / "video", split="train")] == \
        ["--0PQM4-hqg_000030"]
    custom = read_vggsound(csv_path, video_dir=tmp_path / "video", data_root=tmp_path,
                           filename_pattern="{youtube_id}/{start}.mkv")
    assert custom[1].video_path == "video/--0PQM4-hqg/30.mkv"


def test_vggsound_errors(tmp_path):
    csv_path = touch(tmp_path / "vgg.csv", "abc,1,dog,train\nabc,x,dog,train\nabc,2,dog\n")
    with pytest.raises(ManifestError, match="2 malformed line.*line 2 start_seconds 'x'.*line 3 has 3 field"):
        read_vggsound(csv_path, video_dir=tmp_path)
    csv_path = touch(tmp_path / "vgg.csv", "abc,1,dog,holdout\n")
    with pytest.raises(ManifestError, match="split 'holdout' is not train, test"):
        read_vggsound(csv_path, video_dir=tmp_path)
    csv_path = touch(tmp_path / "vgg.csv", "abc,1,dog,train\nabc,1,dog,test\n")
    with pytest.raises(ManifestError, match="collide"):
        read_vggsound(csv_path, video_dir=tmp_path)
