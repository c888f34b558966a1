"""Long speech clips end to end (reader -> extract through Ray): a 14 s LRS2 pretrain clip with word timings is cut
at word boundaries, one without timings whose speech fits 10 s is moved onto it, one whose speech runs on is
rejected; no kept sample has a word past its audio, and every cut is recorded in K.json."""

from __future__ import annotations

import numpy as np
import pytest

from manifests.readers import read_lrs2_list
from manifests.schema import write_manifest
from pipeline.demo.sample_corpus.encode import encode_video, find_tools
from pipeline.demo.sample_corpus.plan import MediaFormat
from pipeline.demo.sample_corpus.speech import SPEECH_RATE, speak
from stages.format import rates
from stages.format.shard_io import iter_samples
from stages.lip import LipConfig
from tests.conftest import extract_config
from tests.manifests.helpers import LRS2_PRETRAIN_WORDS, lrs2_text, touch

VIDEO = "5540428733574932617"
GROUPS = [(0, 10), (10, 19), (19, 24), (24, 31)]  # the pretrain words as the utterances they are spoken in


def _clip(tools, scratch, path, utterances):
    """A 14 s mp4 (grey 64x64 frames at 25 fps) whose audio holds espeak speech at the given (start_s, text)."""
    track = np.zeros(14 * SPEECH_RATE, np.float32)
    for start, text in utterances:
        voice = speak(tools, scratch, text, "en-us", 175, 50)
        a = int(start * SPEECH_RATE)
        track[a:a + len(voice)] += voice[: len(track) - a]
    track += 0.002 * np.random.default_rng(0).standard_normal(len(track)).astype(np.float32)
    frames = np.full((14 * 25, 64, 64, 3), 128, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_video(tools, path, frames, MediaFormat("mp4", 16000, 1, "25"), scratch, audio=track[:, None],
                 audio_sr=SPEECH_RATE)


@pytest.fixture(scope="module")
def long_out(tmp_path_factory, tiny_clip, ray_session):
    from pipeline.jobs.extract import run_extract

    root, scratch, tools = tmp_path_factory.mktemp("lrs2"), tmp_path_factory.mktemp("espeak"), find_tools()
    media = root / "pretrain" / VIDEO
    spoken = [(LRS2_PRETRAIN_WORDS[a][1], " ".join(w for w, _, _ in LRS2_PRETRAIN_WORDS[a:b]).lower())
              for a, b in GROUPS]
    _clip(tools, scratch, media / "00012.mp4", spoken)
    touch(media / "00012.txt", lrs2_text(LRS2_PRETRAIN_WORDS))
    _clip(tools, scratch, media / "00014.mp4", spoken)                     # the same, without word timings
    touch(media / "00014.txt", f"Text:  {' '.join(w for w, _, _ in LRS2_PRETRAIN_WORDS)}\nConf:  4\n")
    _clip(tools, scratch, media / "00015.mp4", [(4.5, "the frying pan because the oil gets very hot")])
    touch(media / "00015.txt", "Text:  THE FRYING PAN BECAUSE THE OIL GETS VERY HOT\nConf:  5\n")
    listing = touch(root / "pretrain.txt", f"{VIDEO}/00012\n{VIDEO}/00014\n{VIDEO}/00015\n")
    manifest = write_manifest(read_lrs2_list(listing, media_root=root / "pretrain", data_root=root),
                              root / "m.parquet")
    out = tmp_path_factory.mktemp("long_out")
    lip = LipConfig(roi="fixed", box=[0.3, 0.55, 0.4, 0.3])   # LRS2 clips are face-centred: a fixed mouth box
    report = run_extract(manifest=manifest, data_root=root, out_dir=out, config=extract_config(tiny_clip, lip=lip))
    return out, report


def test_long_clips_are_cut_moved_or_rejected_never_kept_whole(long_out):
    out, report = long_out
    import pyarrow.parquet as pq

    rejects = {r["clip_id"]: (r["stage"], r["reason"]) for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    assert rejects == {f"{VIDEO}_00014": ("speech_span", "speech_too_long")}, rejects
    samples = list(iter_samples(sorted(str(p) for p in (out / "shards").glob("*.tar"))))
    metas = {s["key"]: s["meta"] for s in samples}
    for s in samples:   # the mouth stream follows the cut or moved window, 25 frames a second of the stored clip
        assert s["arrays"]["lip"].shape[0] == rates.frames_in(s["meta"]["duration_s"], rates.LIP_FPS), s["key"]
    pieces = [m for m in metas.values() if m["parent_id"] == f"{VIDEO}_00012"]
    assert len(pieces) == 2 and len(metas) == 3
    for m in pieces:
        assert m["speech_span_source"] == "word_timings" and m["duration_s"] <= 10.0 and not m["cut"]
        assert m["transcript"] == " ".join(w["word"] for w in m["words"])
        assert all(0 <= w["start_s"] < w["end_s"] <= m["duration_s"] + 0.05 for w in m["words"])  # no word past
        assert m["source"]["start_s"] is not None and m["source"]["end_s"] is not None          # the cut, recorded
        assert m["split"] == "train" and m["subset"] == "pretrain"
    assert " ".join(m["transcript"] for m in sorted(pieces, key=lambda m: m["source"]["start_s"])) == \
        " ".join(w for w, _, _ in LRS2_PRETRAIN_WORDS)
    moved = metas[f"{VIDEO}_00015"]
    assert (moved["window_source"], moved["speech_span_source"], moved["cut"]) == ("vad", "vad", False)
    a, b = moved["speech_span_s"]
    assert moved["source"]["start_s"] + a == pytest.approx(4.5, abs=0.3) and b <= moved["duration_s"]
