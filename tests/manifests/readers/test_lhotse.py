"""lhotse manifests written by lhotse itself become our manifest: cuts, windows, supervisions as transcript,
speaker, speech span and timed words; Recording + Supervision sets give one clip per supervision."""

from __future__ import annotations

from pathlib import Path

import pytest
from lhotse import AudioSource, CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.audio.utils import VideoInfo
from lhotse.supervision import AlignmentItem
from typer.testing import CliRunner

from manifests.paths import check_media_paths
from manifests.readers.registry import build_manifest
from manifests.validate import ManifestError, read_manifest
from tests.stages.media_kit import tone_wav, video


def sup(id, rec, start, duration, text, speaker, words=()):
    return SupervisionSegment(id=id, recording_id=rec, start=start, duration=duration, text=text, speaker=speaker,
                              alignment={"word": [AlignmentItem(w, s, d) for w, s, d in words]} if words else None)


def video_recording(path: Path, seconds: float) -> Recording:
    """A recording with video, described as lhotse's video recipes do (probing video needs torchaudio's ffmpeg)."""
    info = VideoInfo(fps=25.0, num_frames=int(25 * seconds), height=120, width=160)
    return Recording(id="talk", sources=[AudioSource(type="file", channels=[0], source=str(path), video=info)],
                     sampling_rate=44100, num_samples=int(44100 * seconds), duration=seconds)


@pytest.fixture
def corpus(tmp_path):
    media = tmp_path / "corpus" / "wav"
    media.mkdir(parents=True)
    one = Recording.from_file(tone_wav(media / "one.wav", 4.0), recording_id="one")
    two = Recording.from_file(tone_wav(media / "two.wav", 3.0), recording_id="two")
    hum = Recording.from_file(tone_wav(media / "hum.wav", 2.0), recording_id="hum")
    talk = video_recording(video(tmp_path / "corpus" / "talk.mp4", 3.0), 3.0)
    sups = [sup("one-a", "one", 1.0, 1.5, "hello world", "spk1", [("hello", 1.1, 0.4), ("world", 1.6, 0.5)]),
            sup("two-b", "two", 1.5, 1.0, "second part", "spk2"), sup("two-a", "two", 0.2, 1.0, "first", "spk3"),
            sup("talk-a", "talk", 0.5, 2.0, "look at me", "spk4")]
    return tmp_path / "corpus", RecordingSet.from_recordings([one, two, hum, talk]), SupervisionSet.from_segments(sups)


def test_a_cutset_becomes_rows_with_windows_spans_speakers_and_words(corpus, tmp_path):
    root, recordings, supervisions = corpus
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
    one = cuts.subset(cut_ids=[c.id for c in cuts if c.recording_id == "one"])[0]
    cuts = CutSet.from_cuts([*(c for c in cuts if c.recording_id != "one"), one.truncate(offset=0.5, duration=3.0)])
    path = tmp_path / "cuts.jsonl.gz"
    cuts.to_file(path)
    with pytest.warns(UserWarning, match="1 cut\\(s\\) have neither video nor supervision text"):
        table = build_manifest("lhotse", path, dataset="mine", split="train", data_root=root)
    rows = {r["audio_path"] or r["video_path"]: r for r in table.to_pylist()}
    assert set(rows) == {"wav/one.wav", "wav/two.wav", "talk.mp4"}   # hum has no text and no video: skipped
    one, two, talk = rows["wav/one.wav"], rows["wav/two.wav"], rows["talk.mp4"]
    assert (one["task"], one["start_s"], one["end_s"], one["transcript"], one["speaker"]) == \
        ("tts", 0.5, 3.5, "hello world", "spk1")
    assert (one["speech_start_s"], one["speech_end_s"]) == (1.0, 2.5)   # recording time, as the words
    assert one["words"] == [{"word": "hello", "start_s": 1.1, "end_s": 1.5}, {"word": "world", "start_s": 1.6,
                                                                           "end_s": 2.1}]
    assert two["transcript"] == "first second part" and two["speaker"] is None   # two speakers: none claimed
    assert (two["start_s"], two["speech_start_s"], two["speech_end_s"]) == (None, 0.2, 2.5)
    assert (talk["task"], talk["audio_path"], talk["speaker"]) == ("visual_tts", None, "spk4")
    assert {r["dataset"] for r in rows.values()} == {"mine"} and {r["split"] for r in rows.values()} == {"train"}
    assert check_media_paths(table, root) == []


def test_recordings_and_supervisions_give_one_clip_per_supervision(corpus, tmp_path):
    root, recordings, supervisions = corpus
    recordings.to_file(tmp_path / "recordings.jsonl.gz")
    supervisions.to_file(tmp_path / "supervisions.jsonl.gz")
    from pipeline.cli.app import app

    result = CliRunner().invoke(app, ["manifest", "build", "lhotse", str(tmp_path / "recordings.jsonl.gz"),
                                      "--supervisions", str(tmp_path / "supervisions.jsonl.gz"), "--out",
                                      str(tmp_path / "m.parquet")])
    assert result.exit_code == 0, result.output
    assert f"give extract --data-root {root}" in " ".join(result.output.split())   # the default data root, said
    table = read_manifest(tmp_path / "m.parquet")
    rows = {r["clip_id"]: r for r in table.to_pylist()}
    assert set(rows) == {"one-a", "two-a", "two-b", "talk-a"}
    assert (rows["two-b"]["start_s"], rows["two-b"]["end_s"], rows["two-b"]["transcript"]) == (1.5, 2.5, "second part")
    assert (rows["two-b"]["speech_start_s"], rows["two-b"]["speech_end_s"]) == (1.5, 2.5)
    assert rows["two-b"]["speaker"] == "spk2" and rows["talk-a"]["video_path"] == "talk.mp4"


def test_sources_that_are_not_local_files_are_refused_by_name(tmp_path):
    remote = Recording(id="far", sources=[AudioSource(type="url", channels=[0], source="https://example.org/a.wav")],
                       sampling_rate=16000, num_samples=16000, duration=1.0)
    CutSet.from_manifests(recordings=RecordingSet.from_recordings([remote])).to_file(tmp_path / "c.jsonl.gz")
    with pytest.raises(ManifestError, match=r"cut far.*sources \[url\]; only one local file"):
        build_manifest("lhotse", tmp_path / "c.jsonl.gz")
    RecordingSet.from_recordings([remote]).to_file(tmp_path / "r.jsonl.gz")
    with pytest.raises(ManifestError, match="not a CutSet: give the supervisions too"):
        build_manifest("lhotse", tmp_path / "r.jsonl.gz")
