"""The LRS2 list reader: ids, upper-case `Text:` transcripts, splits from the list name, a 14 s pretrain clip with
word timings cut at word boundaries, unsafe ids."""

from __future__ import annotations

import pytest

from manifests.readers import read_lrs2_list
from manifests.schema import clips_to_table
from manifests.validate import ManifestError, validate_table
from tests.manifests.helpers import LRS2_PRETRAIN_WORDS, make_lrs2_pretrain, touch


def test_read_lrs2_list(lrs2):
    listing, main = lrs2
    clips = read_lrs2_list(listing, media_root=main)
    assert [(c.clip_id, c.video_path, c.transcript, c.split, c.task, c.speaker) for c in clips] == [
        ("5535415699068794046_00001", "5535415699068794046/00001.mp4", "WHEN YOU'RE COOKING CHIPS", "test",
         "visual_tts", None),
        ("6330311066473698535_00011", "6330311066473698535/00011.mp4", None, "test", "visual_tts", None),
    ]
    assert read_lrs2_list(listing, media_root=main, split="train", video_ext=".avi")[0].video_path.endswith("00001.avi")
    custom = read_lrs2_list(listing, media_root=main, transcript_fn=lambda root, item: item.upper(),
                            speaker_fn=lambda item: item.split("/")[0])
    assert custom[1].transcript == "6330311066473698535/00011" and custom[1].speaker == "6330311066473698535"


def test_lrs2_errors(lrs2, tmp_path):
    listing, main = lrs2
    touch(main / "5535415699068794046" / "00001.txt", "WORDS WITHOUT PREFIX\n")
    with pytest.raises(ManifestError, match="should start with 'Text:'"):
        read_lrs2_list(listing, media_root=main)
    bad = touch(tmp_path / "bad.txt", "../../etc/00001\n")
    with pytest.raises(ManifestError, match="bad.txt line 1.*not a plain relative name"):
        read_lrs2_list(bad, media_root=main)
    with pytest.raises(ManifestError, match="lists no clips"):
        read_lrs2_list(touch(tmp_path / "empty.txt", "\n"), media_root=main)


def test_lrs2_splits_and_subsets(lrs2, tmp_path):
    listing, main = lrs2
    assert {(c.split, c.subset) for c in read_lrs2_list(listing, media_root=main)} == {("test", "test")}
    val = touch(tmp_path / "lrs2" / "val.txt", "5535415699068794046/00001\n")
    assert [(c.split, c.subset) for c in read_lrs2_list(val, media_root=main)] == [("valid", "val")]


def test_long_pretrain_clip_is_cut_at_word_boundaries(tmp_path):
    listing, media = make_lrs2_pretrain(tmp_path)
    clips = read_lrs2_list(listing, media_root=media)
    long_id, short_id = "5540428733574932617_00012", "5540428733574932617_00013"
    pieces = [c for c in clips if c.parent_id == long_id]
    (short,) = [c for c in clips if c.clip_id == short_id]
    assert len(clips) == len(pieces) + 1 and len(pieces) == 2
    assert (short.split, short.subset, short.parent_id, short.start_s, short.end_s) == ("train", "pretrain", None,
                                                                                       None, None)
    assert (short.speech_start_s, short.speech_end_s) == (0.30, 3.50) and short.transcript.startswith("WHEN YOU'RE")
    all_words = [w for w, _, _ in LRS2_PRETRAIN_WORDS]
    assert " ".join(p.transcript for p in pieces) == " ".join(all_words)  # every word once, in order
    for piece in pieces:
        words = piece.words
        assert piece.transcript == " ".join(w.word for w in words)
        assert piece.end_s - piece.start_s <= 10.0                      # fits extract's max_seconds
        assert piece.start_s <= words[0].start_s and words[-1].end_s <= piece.end_s   # no word cut by the window
        assert (piece.speech_start_s, piece.speech_end_s) == (words[0].start_s, words[-1].end_s)
        assert piece.clip_id == f"{long_id}_{round(piece.start_s * 100):06d}_{round(piece.end_s * 100):06d}"
        assert piece.video_path == "5540428733574932617/00012.mp4" and piece.split == "train"
    first, second = pieces
    assert first.end_s <= second.start_s  # the windows do not overlap: no word is in two pieces
    validate_table(clips_to_table(clips))
    whole = read_lrs2_list(listing, media_root=media, max_seconds="15")
    assert [c.clip_id for c in whole] == [long_id, short_id] and whole[0].speech_end_s == 13.70


def test_lrs2_word_table_errors(tmp_path):
    listing, media = make_lrs2_pretrain(tmp_path)
    touch(media / "5540428733574932617" / "00013.txt", "Text:  HI\nConf:  4\n\nWORD START END ASDSCORE\nHI x 1.0 2\n")
    with pytest.raises(ManifestError, match="00013.txt line 5: expected 'WORD START END"):
        read_lrs2_list(listing, media_root=media)
    with pytest.raises(ManifestError, match="max_seconds must be"):
        read_lrs2_list(listing, media_root=media, max_seconds="ten")
