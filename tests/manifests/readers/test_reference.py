"""The reference implementation's lists: the audio path kept, the task given, malformed lines."""

from __future__ import annotations

import pytest

from manifests.readers import read_reference_list
from manifests.validate import ManifestError
from tests.manifests.helpers import REF_LINE, touch


def test_read_reference_list(tmp_path):
    lines = [REF_LINE.format(audio="/corpora/lrs2/a/x.1.wav", stem="x.1"), REF_LINE.format(audio="b/y.wav", stem="y")]
    path = touch(tmp_path / "train.txt", "\n".join(lines) + "\n")
    clips = read_reference_list(path, task="visual_tts", dataset="lrs2", data_root="/corpora",
                                video_pattern="videos/{stem}.mp4")
    assert [(c.clip_id, c.audio_path, c.video_path, c.task, c.transcript) for c in clips] == [
        ("x_1", "lrs2/a/x.1.wav", "videos/x.1.mp4", "visual_tts", None),
        ("y", "b/y.wav", "videos/y.mp4", "visual_tts", None),
    ]
    assert read_reference_list(path, task="v2s")[0].audio_path == "/corpora/lrs2/a/x.1.wav"
    assert read_reference_list(path, task="v2s")[0].video_path is None


def test_reference_list_errors(tmp_path):
    good = REF_LINE.format(audio="a.wav", stem="a")
    path = touch(tmp_path / "l.txt", f"{good}\na.wav|x|y\n{good}|extra\n")
    with pytest.raises(ManifestError) as e:
        read_reference_list(path, task="tts")
    assert "line 2 has 3 field(s)" in str(e.value) and "line 3 has 8 field(s)" in str(e.value)
    with pytest.raises(ManifestError, match="task 'speech'"):
        read_reference_list(path, task="speech")
    path = touch(tmp_path / "l.txt", f"{good}\n" + REF_LINE.format(audio="other/a.wav", stem="a") + "\n")
    with pytest.raises(ManifestError, match="collide"):
        read_reference_list(path, task="tts")
