"""Media paths stay under the data root: `..`, absolute paths and symlinks that leave it are refused."""

from __future__ import annotations

import os

import pytest

from manifests.paths import InvalidPath, PathEscapesRoot, check_media_paths, resolve_under_root
from manifests.schema import clips_to_table
from tests.manifests.helpers import clip, touch


def test_resolve_under_root_accepts_relative_and_absolute_inside(tmp_path):
    root = tmp_path / "data"
    touch(root / "a" / "x.wav")
    assert resolve_under_root(root, "a/x.wav") == (root / "a" / "x.wav").resolve()
    assert resolve_under_root(root, str(root / "a" / "x.wav")) == (root / "a" / "x.wav").resolve()
    assert resolve_under_root(root, "a/../a/x.wav") == (root / "a" / "x.wav").resolve()


@pytest.mark.parametrize("path", ["../outside.wav", "a/../../outside.wav", "/etc/passwd"])
def test_paths_escaping_root_are_refused(tmp_path, path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    with pytest.raises(PathEscapesRoot):
        resolve_under_root(tmp_path / "data", path)


def test_symlink_out_of_root_is_refused_and_inside_is_accepted(tmp_path):
    root = tmp_path / "data"
    touch(tmp_path / "secret.wav")
    touch(root / "real.wav")
    os.symlink(tmp_path / "secret.wav", root / "link_out.wav")
    os.symlink(root / "real.wav", root / "link_in.wav")
    os.symlink(tmp_path, root / "dir_out")
    with pytest.raises(PathEscapesRoot):
        resolve_under_root(root, "link_out.wav")
    with pytest.raises(PathEscapesRoot):
        resolve_under_root(root, "dir_out/secret.wav")
    assert resolve_under_root(root, "link_in.wav") == (root / "real.wav").resolve()


@pytest.mark.parametrize("path", ["", "   ", "a\x00b.wav"])
def test_empty_and_nul_paths_are_invalid(tmp_path, path):
    with pytest.raises(InvalidPath):
        resolve_under_root(tmp_path, path)
    assert issubclass(InvalidPath, ValueError) and issubclass(PathEscapesRoot, ValueError)


def test_check_media_paths(tmp_path):
    touch(tmp_path / "ok.mp4")
    table = clips_to_table([clip("ok", video_path="ok.mp4"), clip("gone", video_path="gone.mp4"),
                            clip("out", video_path="../x.mp4", audio_path="ok.mp4"), clip("nul", video_path="a\x00")])
    problems = [(p.clip_id, p.column, p.problem) for p in check_media_paths(table, tmp_path)]
    assert problems == [("gone", "video_path", "missing"), ("out", "video_path", "escapes_root"),
                        ("nul", "video_path", "invalid")]


def test_strict_check_flags_files_that_are_not_self_contained_media(tmp_path):
    """A playlist or concat list under the root, named like media, is flagged (issue 15, 1): `manifest validate
    --strict` says so before any job would have decoded it."""
    (tmp_path / "outside.wav").write_bytes(b"RIFF")
    root = tmp_path / "data"
    touch(root / "hls.mp4", f"#EXTM3U\n#EXTINF:2.0,\nfile://{tmp_path / 'outside.wav'}\n")
    touch(root / "list.wav", "ffconcat version 1.0\nfile '../outside.wav'\n")
    touch(root / "text.mp4", "not media\n")
    (root / "real.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(32))
    table = clips_to_table([clip("hls", video_path="hls.mp4"), clip("list", "tts", video_path=None,
                                                                    audio_path="list.wav", transcript="hi"),
                            clip("text", video_path="text.mp4"), clip("real", video_path="real.wav")])
    problems = {p.clip_id: (p.problem, p.detail.split(":")[0]) for p in check_media_paths(table, root)}
    assert problems == {"hls": ("not_media", "indirect_media"), "list": ("not_media", "indirect_media"),
                        "text": ("not_media", "unreadable_media")}
