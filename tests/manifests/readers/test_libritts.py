"""The LibriTTS reader: splits and speakers from folders, normalized then original transcripts."""

from __future__ import annotations

import pytest

from manifests.readers import read_libritts
from manifests.validate import ManifestError
from tests.manifests.helpers import touch


def test_read_libritts(libritts):
    clips = read_libritts(libritts)
    rows = [(c.clip_id, c.split, c.speaker, c.transcript, c.audio_path) for c in clips]
    assert rows == [
        ("1272_128104_000001_000000", "dev-clean", "1272", None, "dev-clean/1272/128104/1272_128104_000001_000000.wav"),
        ("84_121123_000007_000000", "train-clean-100", "84", "Hello there.",
         "train-clean-100/84/121123/84_121123_000007_000000.wav"),
        ("84_121123_000008_000000", "train-clean-100", "84", "Only original.",
         "train-clean-100/84/121123/84_121123_000008_000000.wav"),
    ]
    one_split = read_libritts(libritts / "train-clean-100")
    assert [c.split for c in one_split] == ["train-clean-100"] * 2
    assert one_split[0].audio_path == "84/121123/84_121123_000007_000000.wav"
    assert {c.split for c in read_libritts(libritts, split="mine")} == {"mine"}


def test_libritts_errors(tmp_path, libritts):
    touch(libritts / "stray.wav")
    with pytest.raises(ManifestError, match="outside the LibriTTS layout.*stray.wav"):
        read_libritts(libritts)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no wav files"):
        read_libritts(tmp_path / "empty")
