"""The LJSpeech reader: metadata.csv fields, raw or normalized text, malformed lines, id collisions."""

from __future__ import annotations

import pytest

from manifests.readers import read_ljspeech
from manifests.validate import ManifestError
from tests.manifests.helpers import touch


def test_read_ljspeech(ljspeech):
    clips = read_ljspeech(ljspeech)
    assert [c.clip_id for c in clips] == ["LJ001-0001", "LJ001_0002", "LJ001-0003"]
    assert clips[0].transcript == "Printing, in eighteen sixty-nine"
    assert clips[1].transcript == '"Quoted" text'
    assert clips[2].transcript == "Only two fields"
    assert clips[1].audio_path == "wavs/LJ001.0002.wav"
    assert {c.task for c in clips} == {"tts"} and {c.dataset for c in clips} == {"ljspeech"}
    assert read_ljspeech(ljspeech, text="raw")[0].transcript == "Printing, in 1869"
    assert read_ljspeech(ljspeech, data_root=ljspeech.parent)[0].audio_path == "LJSpeech-1.1/wavs/LJ001-0001.wav"


def test_ljspeech_errors(tmp_path, ljspeech):
    with pytest.raises(ManifestError, match="not under the data root"):
        read_ljspeech(ljspeech, data_root=tmp_path / "elsewhere")
    touch(ljspeech / "metadata.csv", "a.b|x|x\na_b|y|y\n")
    with pytest.raises(ManifestError, match="collide.*'a.b' and 'a_b' -> 'a_b'"):
        read_ljspeech(ljspeech)
    touch(ljspeech / "metadata.csv", "ok|x|x\nbroken\nx|1|2|3\n../up|x|x\n")
    with pytest.raises(ManifestError) as e:
        read_ljspeech(ljspeech)
    assert "3 malformed line(s)" in str(e.value)
    assert "line 2 has 1 field" in str(e.value) and "line 3 has 4 field" in str(e.value) and "line 4" in str(e.value)
    with pytest.raises(ManifestError, match="does not exist"):
        read_ljspeech(tmp_path / "nothing")
