"""Decode against hostile and careless input (issue 15): files that name other files, windows and spans that do not
lie inside the media, streams that stop short of their stated length, audio-only files on video tasks, and headers
that state far more audio than the clip keeps. Every case is a reject with its reason, or a flagged keep."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from manifests.media_sniff import NotMedia, sniff_container, stated_track_durations
from stages.decode import DecodeConfig, DecodeStage
from tests.stages.media_kit import OpenWatch, sparse_wav, tone_wav, video


def decode(root, config=DecodeConfig(), **row):
    return DecodeStage(data_root=str(root), config=config)([{"clip_id": "c", **row}])[0]


# ----------------------------------------------------------------------------------------------------------------------
# 1. Only a file's own bytes are decoded


@pytest.fixture()
def hostile(tmp_path):
    """A data root holding playlists and concat lists (named .mp4 / .wav) that point at real media outside it:
    by absolute path, file:// URL, ../, and a relative path through a symlinked folder."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    secret = tone_wav(outside / "secret.wav", 2.0)
    video(outside / "secret.mp4", 2.0)
    os.symlink(outside, root / "linked")

    def hls(entry):
        return f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{entry}\n#EXT-X-ENDLIST\n"

    def concat(entry):
        return f"ffconcat version 1.0\nfile '{entry}'\n"

    entries = {"absolute": str(secret), "file_url": f"file://{secret}", "dotdot": "../outside/secret.wav",
               "symlinked_folder": "linked/secret.wav"}
    files = {}
    for name, entry in entries.items():
        for kind, text in (("hls", hls(entry)), ("concat", concat(entry))):
            for suffix in (".mp4", ".wav"):
                path = root / f"{kind}_{name}{suffix}"
                path.write_text(text)
                files[path.name] = path
    (root / "hls_video.mp4").write_text(hls(str(outside / "secret.mp4")))
    files["hls_video.mp4"] = root / "hls_video.mp4"
    return root, outside, files


def test_playlists_and_concat_lists_are_refused_and_nothing_outside_is_opened(hostile):
    root, outside, files = hostile
    watch = OpenWatch(outside)
    try:
        reasons = {}
        for name in files:
            task = "v2s" if name.endswith(".mp4") else "tts"
            column = "video_path" if task == "v2s" else "audio_path"
            reasons[name] = decode(root, task=task, **{column: name})["reject_reason"]
            # the same file as a video's container audio (a tts row with only a video_path)
            reasons[f"{name} (container audio)"] = decode(root, task="tts", video_path=name)["reject_reason"]
        assert watch.opened() == [], "a decoder opened a file outside the data root"
    finally:
        watch.close()
    assert set(reasons.values()) == {"indirect_media"}, reasons


def test_the_watch_sees_a_real_open(hostile):
    """The watch is not blind: decoding the outside file itself (a root that holds it) shows up."""
    _, outside, _ = hostile
    watch = OpenWatch(outside)
    try:
        assert decode(outside, task="tts", audio_path="secret.wav")["reject_reason"] is None
        assert "secret.wav" in watch.opened()
    finally:
        watch.close()


@pytest.mark.parametrize("head, reason", [
    (b"#EXTM3U\n", "indirect_media"), (b"\xef\xbb\xbf#EXTM3U\n", "indirect_media"),
    (b"ffconcat version 1.0\n", "indirect_media"), (b"<?xml version='1.0'?><MPD>", "indirect_media"),
    (b"v=0\no=- 0 0 IN IP4 127.0.0.1\n", "indirect_media"), (b"hello, not media at all\n", "unreadable_media"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x05#EXTM3U\nfile:///etc/passwd\n", "indirect_media"),  # a tag does not hide it
])
def test_sniff_refuses_everything_but_known_containers(tmp_path, head, reason):
    path = tmp_path / "x.mp4"
    path.write_bytes(head + b"\n" * 64)
    with pytest.raises(NotMedia) as e:
        sniff_container(path)
    assert e.value.reason == reason


def test_sniff_accepts_real_containers(tmp_path):
    assert sniff_container(tone_wav(tmp_path / "a.wav", 0.5)) == "wav"
    assert sniff_container(video(tmp_path / "v.mp4", 1.0)) == "iso-bmff"
    import soundfile as sf

    sf.write(tmp_path / "a.flac", np.zeros(1600), 16000)
    sf.write(tmp_path / "a.ogg", np.zeros(16000), 16000, format="OGG", subtype="VORBIS")
    assert sniff_container(tmp_path / "a.flac") == "flac" and sniff_container(tmp_path / "a.ogg") == "ogg"


# ----------------------------------------------------------------------------------------------------------------------
# 5. Windows and spans inside the media


@pytest.mark.parametrize("times, reason", [
    (dict(start_s=-2.0, end_s=-1.0), "negative_time"),
    (dict(start_s=2.0, end_s=1.0), "start_not_before_end"),
    (dict(start_s=50.0), "window_past_end"),
    (dict(start_s=0.5, end_s=60.0), "window_past_end"),
    (dict(speech_start_s=50.0, speech_end_s=60.0), "speech_span_outside_clip"),
    (dict(speech_start_s=1.0, speech_end_s=6.0), "speech_span_outside_clip"),
    (dict(start_s=0.5, end_s=2.0, speech_start_s=0.2, speech_end_s=1.0), "speech_span_outside_window"),
    (dict(speech_start_s=1.0), "speech_span_incomplete"),
])
def test_windows_and_spans_outside_the_media_are_rejected(tmp_path, times, reason):
    tone_wav(tmp_path / "a.wav", 2.7)
    row = decode(tmp_path, task="tts", audio_path="a.wav", transcript="hi", **times)
    assert (row["reject_stage"], row["reject_reason"]) == ("decode", reason), row["reject_detail"]


def test_windows_and_spans_inside_are_kept(tmp_path):
    tone_wav(tmp_path / "a.wav", 2.7)
    row = decode(tmp_path, task="tts", audio_path="a.wav", transcript="hi", start_s=0.5, end_s=2.7,
                 speech_start_s=0.6, speech_end_s=2.65)
    assert row["reject_reason"] is None and row["duration_s"] == pytest.approx(2.2)
    long_wav = tone_wav(tmp_path / "long.wav", 14.0)
    row = decode(tmp_path, task="tts", audio_path=long_wav.name, transcript="hi", speech_start_s=12.0,
                 speech_end_s=13.0)
    assert row["reject_reason"] == "speech_span_outside_clip"  # inside the file, after the cut at 10 s


# ----------------------------------------------------------------------------------------------------------------------
# 6. A stream that stops short of its stated length


def _damaged(tmp_path, how) -> dict:
    """A row whose media states 8 s but decodes to about half: the issue's mp4 with 20 kB overwritten mid-file,
    an audio-only mp4 (index at the front) cut in half, and a FLAC cut in half (its STREAMINFO states 8 s)."""
    if how == "overwritten":
        data = bytearray(video(tmp_path / "whole.mp4", 8.0).read_bytes())
        mid = len(data) // 2
        data[mid:mid + 20000] = np.random.default_rng(1).bytes(20000)
        name, row = "damaged.mp4", {"task": "v2s", "video_path": "damaged.mp4"}
    elif how == "m4a_cut":
        data = video(tmp_path / "whole.m4a", 8.0, picture=False, faststart=True).read_bytes()
        data = data[: len(data) // 2]
        name, row = "damaged.m4a", {"task": "tts", "audio_path": "damaged.m4a", "transcript": "hi"}
    else:
        import soundfile as sf

        sf.write(tmp_path / "whole.flac", 0.3 * np.sin(np.arange(8 * 16000) / 5.0), 16000)
        data = (tmp_path / "whole.flac").read_bytes()
        data = data[: len(data) // 2]
        name, row = "damaged.flac", {"task": "tts", "audio_path": "damaged.flac", "transcript": "hi"}
    (tmp_path / name).write_bytes(bytes(data))
    return row


@pytest.mark.parametrize("how", ["overwritten", "m4a_cut", "flac_cut"])
def test_stream_stopping_short_is_rejected_below_the_share_and_flagged_above(tmp_path, how):
    row_in = _damaged(tmp_path, how)
    row = decode(tmp_path, **row_in)
    assert row["reject_reason"] == "truncated_media", row["reject_detail"]
    kept = decode(tmp_path, DecodeConfig(min_decoded_share=0.2), **row_in)
    assert kept["reject_reason"] is None and kept["truncated"] is True, kept["reject_detail"]
    assert 2.0 < kept["duration_s"] < 6.0 and kept["audio_duration_s"] == pytest.approx(kept["duration_s"], abs=0.01)


def test_iso_bmff_track_headers_state_durations(tmp_path):
    assert stated_track_durations(video(tmp_path / "v.mp4", 3.0)) == {"video": pytest.approx(3.0),
                                                                      "audio": pytest.approx(3.0, abs=0.05)}
    assert stated_track_durations(tone_wav(tmp_path / "a.wav", 1.0)) == {}


def test_whole_files_are_not_flagged(tmp_path):
    video(tmp_path / "ok.mp4", 3.0)
    tone_wav(tmp_path / "ok.wav", 3.0)
    for row in (decode(tmp_path, task="v2s", video_path="ok.mp4"), decode(tmp_path, task="tts", audio_path="ok.wav")):
        assert row["reject_reason"] is None and row["truncated"] is False


# ----------------------------------------------------------------------------------------------------------------------
# 9c. An audio-only file on a video task


def test_audio_only_mp4_on_a_video_task_is_no_video(tmp_path):
    video(tmp_path / "sound.mp4", 2.0, picture=False)
    row = decode(tmp_path, task="v2s", video_path="sound.mp4")
    assert row["reject_reason"] == "no_video", row["reject_detail"]


# ----------------------------------------------------------------------------------------------------------------------
# 11. Memory bounded by max_seconds, whatever the header states

PEAK_SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy, soundfile, torch, torchaudio.functional  # imported first: only the decode call is measured
    from stages.decode import DecodeConfig, DecodeStage
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = DecodeStage(data_root=sys.argv[1], config=DecodeConfig(max_seconds=float(sys.argv[3])))(
        [{"clip_id": "c", "task": "tts", "audio_path": sys.argv[2]}])[0]
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    print(row["reject_reason"], row.get("duration_s"), grown)
""")


def test_decode_memory_is_bounded_by_max_seconds_not_by_the_file(tmp_path):
    """A WAV stating 10 minutes of 8-channel 48 kHz audio (2 kB on disk, a sparse file) decodes its 10 s clip in
    memory bounded by max_seconds: the window at the source rate and channels, times a small factor. Reading the
    whole file would take 10 minutes x 8 channels x 4 bytes = 920 MB at the least."""
    rate, channels, max_seconds = 48000, 8, 10.0
    sparse_wav(tmp_path / "long.wav", 600.0, rate=rate, channels=channels)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path), "long.wav", str(max_seconds)],
                         capture_output=True, text=True, env=env, check=True).stdout.split()
    reason, duration, grown = out[0], float(out[1]), int(out[2])
    assert reason == "None" and duration == pytest.approx(max_seconds)
    window_bytes = max_seconds * rate * channels * 4  # the kept window, float32, every channel: 15 MB
    assert grown < 4 * window_bytes, f"decode grew the process by {grown / 1e6:.0f} MB"
