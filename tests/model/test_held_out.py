"""LibriTTS test and dev subsets are never trained on: a miniature LibriTTS (espeak-ng speech in the published
layout) through the reader, extract (Ray) and the trainer's plan and loader."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from manifests.readers import build_manifest
from manifests.schema import write_manifest
from model.data.plan import held_out_rows, plan_pretrain
from model.data.stream import TrainLoader
from tests.conftest import extract_config
from tests.model.helpers import prep_for

SUBSETS = {"train-clean-100": 4, "train-other-500": 2, "dev-clean": 2, "dev-other": 1, "test-clean": 2,
           "test-other": 1}
LINES = ("The library closes at noon.", "Turn left at the light.", "Coffee tastes better cold.",
         "She sells sea shells.", "We will meet again.", "The garden looks lovely.")


@pytest.fixture(scope="module")
def libritts_out(tmp_path_factory, tiny_clip, ray_session):
    from pipeline.demo.sample_corpus.encode import find_tools
    from pipeline.demo.sample_corpus.speech import SPEECH_RATE, speak
    from pipeline.jobs.extract import run_extract

    root = tmp_path_factory.mktemp("libritts") / "LibriTTS"
    tools, n, scratch = find_tools(), 0, tmp_path_factory.mktemp("espeak")
    for subset, count in SUBSETS.items():
        for i in range(count):
            chapter = root / subset / "19" / f"{198 + i}"
            chapter.mkdir(parents=True)
            text = LINES[n % len(LINES)]
            wave = np.concatenate([np.zeros(4000, np.float32), speak(tools, scratch, text, "en-us", 170, 50)])
            stem = f"19_{198 + i}_{n:06d}_000000"
            sf.write(chapter / f"{stem}.wav", wave, SPEECH_RATE, subtype="PCM_16")
            (chapter / f"{stem}.normalized.txt").write_text(text)
            (chapter / f"._{stem}.wav").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")
            n += 1
    manifest = write_manifest(build_manifest("libritts", root), root.parent / "libritts.parquet")
    out = tmp_path_factory.mktemp("libritts_out")
    report = run_extract(manifest=manifest, data_root=root, out_dir=out, config=extract_config(tiny_clip))
    return out, report


def test_test_and_dev_subsets_never_reach_a_training_batch(libritts_out):
    out, report = libritts_out
    assert report["counts"]["kept"] == sum(SUBSETS.values()), report
    data = plan_pretrain([out], val_samples=2)
    held = {key for _, key in data.exclude}
    from stages.format.layout import OutputDir

    index = OutputDir(out).read_index().to_pylist()
    by_subset = {r["key"]: r["subset"] for r in index}
    assert held == {k for k, s in by_subset.items() if s.startswith(("dev-", "test-"))} and len(held) == 6
    assert {r["split"] for r in index if r["key"] in held} == {"valid", "test"}
    seen = set()
    batches = TrainLoader(data, prep_for(data), batch_size=3, seed=0, num_workers=0).batches()
    for _ in range(12):
        seen.update(next(batches)["key"])
    assert seen and not seen & held
    assert {by_subset[k] for k in seen} <= {"train-clean-100", "train-other-500"}
    assert seen == {k for k, s in by_subset.items() if s.startswith("train-")}  # and every train clip is used


def test_held_out_rule_on_index_rows():
    rows = [{"url": "u", "key": f"k{i}", "task": "tts", "split": s}
            for i, s in enumerate(["train", "valid", "test", "train", "test-clean", "dev-other", None])]
    rows[4]["split"], rows[5]["split"] = "test", "valid"   # read_index maps old names like these
    val, exclude = held_out_rows(rows, val_split="test", val_samples=1)
    assert [r["key"] for r in val] == ["k2"] and {k for _, k in exclude} == {"k1", "k2", "k4", "k5"}
    val, exclude = held_out_rows(rows, val_split="test", val_samples=0)
    assert val == [] and {k for _, k in exclude} == {"k1", "k2", "k4", "k5"}  # held out even with no validation
