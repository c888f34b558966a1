"""The GRID reader: alignments as transcript and speech span, speakers, an id list."""

from __future__ import annotations

import pytest

from manifests.readers import grid_align_transcript, read_grid
from manifests.validate import ManifestError
from tests.manifests.helpers import touch


def test_read_grid(grid, tmp_path):
    clips = read_grid(grid)
    first, second = clips
    assert (first.clip_id, first.speaker, first.video_path, first.transcript) == \
        ("s1_bbaf2n", "s1", "s1/bbaf2n.mpg", "bin blue at")
    assert first.speech_start_s == pytest.approx(0.95) and first.speech_end_s == pytest.approx(1.64)
    assert (second.clip_id, second.speaker, second.transcript) == ("s2_lgaz5a", "s2", None)
    listed = read_grid(grid, list_path=touch(tmp_path / "grid.txt", "s1/bbaf2n\n"))
    assert [c.clip_id for c in listed] == ["s1_bbaf2n"]


def test_grid_align_errors(tmp_path):
    assert grid_align_transcript(tmp_path / "none.align") is None
    assert grid_align_transcript(touch(tmp_path / "sil.align", "0 100 sil\n")).text == ""
    with pytest.raises(ManifestError, match="line 2"):
        grid_align_transcript(touch(tmp_path / "bad.align", "0 100 sil\n100 x bin\n"))
    with pytest.raises(ManifestError, match="no .mpg files"):
        read_grid(tmp_path)
