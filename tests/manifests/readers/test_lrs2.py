"""The LRS2 list reader: ids, `Text:` transcripts, split from the list name, unsafe ids."""

from __future__ import annotations

import pytest

from manifests.readers import read_lrs2_list
from manifests.validate import ManifestError
from tests.manifests.helpers import touch


def test_read_lrs2_list(lrs2):
    listing, main = lrs2
    clips = read_lrs2_list(listing, media_root=main)
    assert [(c.clip_id, c.video_path, c.transcript, c.split, c.task, c.speaker) for c in clips] == [
        ("5535415699068794046_00001", "5535415699068794046/00001.mp4", "WHEN YOU'RE COOKING CHIPS", "test",
         "visual_tts", None),
        ("6330311066473698535_00011", "6330311066473698535/00011.mp4", None, "test", "visual_tts", None),
    ]
    assert read_lrs2_list(listing, media_root=main, split="x", video_ext=".avi")[0].video_path.endswith("00001.avi")
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
