"""The LibriTTS reader on a miniature of the published layout: subsets as canonical splits, speakers from folders,
normalized then original transcripts, `._` resource forks skipped, unreadable text kept as a reject-to-be."""

from __future__ import annotations

import pytest

from manifests.readers import read_libritts
from manifests.schema import clips_to_table
from manifests.validate import ManifestError, row_warnings, validate_table
from tests.manifests.helpers import touch


def test_read_libritts(libritts):
    clips = read_libritts(libritts)
    rows = [(c.clip_id, c.split, c.subset, c.speaker, c.transcript, c.audio_path) for c in clips]
    assert rows == [
        ("1272_128104_000001_000000", "valid", "dev-clean", "1272", None,
         "dev-clean/1272/128104/1272_128104_000001_000000.wav"),
        ("1688_142285_000000_000000", "test", "test-other", "1688", None,
         "test-other/1688/142285/1688_142285_000000_000000.wav"),
        ("84_121123_000007_000000", "train", "train-clean-100", "84", "Hello there.",
         "train-clean-100/84/121123/84_121123_000007_000000.wav"),
        ("84_121123_000008_000000", "train", "train-clean-100", "84", "Only original.",
         "train-clean-100/84/121123/84_121123_000008_000000.wav"),
    ]
    one_split = read_libritts(libritts / "train-clean-100")
    assert [(c.split, c.subset) for c in one_split] == [("train", "train-clean-100")] * 2
    assert one_split[0].audio_path == "84/121123/84_121123_000007_000000.wav"
    assert {c.split for c in read_libritts(libritts, split="dev")} == {"valid"}
    with pytest.raises(ManifestError, match="split 'mine' is not one of train, valid, test"):
        read_libritts(libritts, split="mine")


def test_resource_forks_are_skipped_and_bad_text_becomes_a_reject(libritts):
    clips = {c.clip_id: c for c in read_libritts(libritts)}
    assert not any(k.startswith("_") for k in clips)  # no clip from ._84_121123_000008_000000.wav
    bad = clips["1688_142285_000000_000000"]
    assert bad.transcript is None and "not valid UTF-8" in bad.transcript_problem
    table = clips_to_table(clips.values())
    validate_table(table)  # the build goes on: the row is extract's to reject (unreadable_transcript)
    assert ("1688_142285_000000_000000", "transcript_unreadable") in {(w.clip_id, w.problem)
                                                                    for w in row_warnings(table)}


def test_libritts_errors(tmp_path, libritts):
    touch(libritts / "stray.wav")
    with pytest.raises(ManifestError, match="outside the LibriTTS layout.*stray.wav"):
        read_libritts(libritts)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no wav files"):
        read_libritts(tmp_path / "empty")
