"""The GRID reader: alignments as transcript, timed words and speech span, speakers, an id list, the public
release's layout (alignments in their own folder) and --align-pattern."""

from __future__ import annotations

import pytest

from manifests.readers import grid_align_transcript, read_grid
from manifests.validate import ManifestError
from tests.manifests.helpers import make_grid_release, touch


def test_read_grid(grid, tmp_path):
    clips = read_grid(grid)
    first, second = clips
    assert (first.clip_id, first.speaker, first.video_path, first.transcript) == \
        ("s1_bbaf2n", "s1", "s1/bbaf2n.mpg", "bin blue at")
    assert first.speech_start_s == pytest.approx(0.95) and first.speech_end_s == pytest.approx(1.64)
    assert [(w.word, w.start_s, w.end_s) for w in first.words] == [("bin", 0.95, 1.18), ("blue", 1.18, 1.36),
                                                                   ("at", 1.42, 1.64)]
    assert (second.clip_id, second.speaker, second.transcript) == ("s2_lgaz5a", "s2", None)
    listed = read_grid(grid, list_path=touch(tmp_path / "grid.txt", "s1/bbaf2n\n"))
    assert [c.clip_id for c in listed] == ["s1_bbaf2n"]


def test_release_layout(tmp_path):
    root = make_grid_release(tmp_path)
    clips = read_grid(root)   # alignments/ exists: the release layout is taken
    assert [(c.clip_id, c.transcript) for c in clips] == [("s1_bbaf2n", "bin blue at"), ("s1_bbal6n", "bin blue at"),
                                                          ("s2_lgaz5a", "bin blue at")]
    moved = tmp_path / "gridcorpus" / "align_files"
    (tmp_path / "gridcorpus" / "alignments").rename(moved)
    with pytest.raises(ManifestError, match="no alignment found for any of the 3 clip.*--align-pattern"):
        read_grid(root)
    again = read_grid(root, align_pattern="align_files/{speaker}/{utterance}.align")
    assert all(c.transcript == "bin blue at" and c.words for c in again)
    with pytest.raises(ManifestError, match="fields are {speaker} and {utterance}"):
        read_grid(root, align_pattern="{talker}/{utterance}.align")


def test_grid_align_errors(tmp_path):
    assert grid_align_transcript(tmp_path / "none.align") is None
    assert grid_align_transcript(touch(tmp_path / "sil.align", "0 100 sil\n")).text == ""
    with pytest.raises(ManifestError, match="line 2"):
        grid_align_transcript(touch(tmp_path / "bad.align", "0 100 sil\n100 x bin\n"))
    with pytest.raises(ManifestError, match="no .mpg files"):
        read_grid(tmp_path)
