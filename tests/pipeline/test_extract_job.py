"""The extract job end to end through Ray on the generated corpus: contract, accounting, resume, increments."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from manifests.schema import write_manifest
from pipeline.jobs.extract import run_extract
from stages.format.contract import ContractError, check_sample, read_dataset_json
from stages.format.layout import OutputDir
from stages.format.shard_io import iter_samples
from tests.conftest import SHARD_SIZE
from tests.conftest import extract_config as config

REPO = Path(__file__).resolve().parents[2]

# What a reject's detail must say, per reason (the file, the decoder's words, the measured value, ...).
DETAILS = {
    "missing_file": r"/media/bad/missing\.wav$",
    "empty_file": r"/media/bad/empty_file\.mp4$",
    "unreadable_media": r"^(video: RuntimeError: Error reading .*/media/bad/truncated\.mp4|random_bytes\.mp4 is "
                        r"not a known media container \(first bytes: [0-9a-f ]+\))",
    "no_audio": r"has no audio track and the row has no audio_path",
    "no_video": r"^task visual_tts needs a video_path$",
    "too_short": r"^usable span 0\.0\d+s < 0\.1s",
    "single_frame_video": r"/media/bad/single_frame\.mp4$",
    "bad_samples": r"^\d+ NaN/Inf samples",
    "path_escapes_root": r"^media path '\.\./outside\.wav' resolves to .*outside the data root",
    "silent_audio": r"^integrated loudness -inf LUFS is below -70\.0 LUFS",
    "no_phonemes": r"gave no phones",
    "empty_transcript": r"^(blank|no) transcript$",
    "no_face": r"^a face was found in 0% of \d+ frames \(min_face_share 50%\)$",
}


def shard_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*.tar"))}


def test_every_row_lands_in_exactly_one_place(corpus, extracted):
    out, report = extracted
    manifest_ids = set(pq.read_table(corpus.manifest)["clip_id"].to_pylist())
    kept = pq.read_table(out / "index.parquet")["key"].to_pylist()
    rejected = pq.read_table(out / "rejects.parquet")["clip_id"].to_pylist()
    assert len(kept) == len(set(kept)) and len(rejected) == len(set(rejected))
    assert set(kept).isdisjoint(rejected)
    assert set(kept) | set(rejected) == manifest_ids
    assert report["counts"]["unaccounted"] == 0
    assert report["counts"]["kept"] == len(kept) and report["counts"]["rejected"] == len(rejected)


def test_each_hostile_input_has_its_stage_and_reason(corpus, extracted):
    out, _ = extracted
    rejects = {r["clip_id"]: r for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    for clip_id, exp in corpus.expected.items():
        if exp["outcome"] == "reject":
            assert clip_id in rejects, clip_id
            assert (rejects[clip_id]["stage"], rejects[clip_id]["reason"]) == (exp["stage"], exp["reason"]), \
                rejects[clip_id]
            detail = rejects[clip_id]["detail"]
            assert re.search(DETAILS[exp["reason"]], detail), (exp["reason"], detail)
        else:
            assert clip_id not in rejects, rejects.get(clip_id)


def test_shards_read_with_plain_webdataset_honour_dataset_json(corpus, extracted):
    out, _ = extracted
    contract, doc = read_dataset_json(out)
    assert doc["job"] == "extract" and contract.video_encoder["random_init"] is True
    assert contract.phones["vocab"]["symbols"][0] == "<pad>"
    shards = sorted((out / "shards").glob("extract-*.tar"))
    samples = list(iter_samples(shards))
    assert {s["key"] for s in samples} == corpus.good_ids()
    for s in samples:
        assert check_sample(s["meta"], s["arrays"], contract) == [], s["key"]
        meta = s["meta"]
        assert meta["clip_id"] == s["key"] and s["flac"][:4] == b"fLaC"
        if meta["task"] == "tts":
            assert s["arrays"]["video"] is None
        if meta["task"] == "v2s":
            assert s["arrays"]["phones"] is None and meta["speech_span_s"] is None
        else:
            a, b = meta["speech_span_s"]
            assert 0 <= a < b <= meta["duration_s"] + 1e-6
    index = pq.read_table(out / "index.parquet").to_pylist()
    for row in index:
        assert (out / row["shard"]).is_file()


def test_non_ascii_and_currency_transcripts_are_spelled_out(extracted):
    out, _ = extracted
    metas = [s["meta"] for s in iter_samples(sorted((out / "shards").glob("*.tar")))]
    texts = {m["transcript"]: m["phonemes"] for m in metas if m.get("transcript")}
    assert any("é" in t or "ï" in t for t in texts), "corpus must hold non-ASCII transcripts"
    money = [p for t, p in texts.items() if "$" in t]
    unstressed = [p.replace("ˈ", "").replace("ˌ", "").replace(" ", "") for p in money]
    assert money and all("dɑːlɚ" in p for p in unstressed), money  # "$5" is read as "dollar five"


def test_report_and_outputs(extracted):
    out, report = extracted
    for name in ("index.parquet", "rejects.parquet", "report.json", "dataset.json"):
        assert (out / name).is_file()
    assert {"decode", "audio", "phonemes", "visual"} <= set(report["stage_seconds"])
    assert report["counts"]["shards"] == len(list((out / "shards").glob("*.tar")))
    assert report["this_run"]["rows_processed"] == report["counts"]["rows"]
    assert not list(out.rglob(".*.tmp"))


def test_rerun_does_no_work_and_changes_nothing(corpus, tiny_clip, extracted, tmp_path):
    out = tmp_path / "rerun"                          # a re-run rewrites report.json: not in the shared output
    shutil.copytree(extracted[0], out)
    before = shard_digests(out)
    report = run_extract(manifest=corpus.manifest, data_root=corpus.root, out_dir=out, config=config(tiny_clip))
    assert report["this_run"]["rows_todo"] == 0 and report["counts"]["unaccounted"] == 0
    assert shard_digests(out) == before


def test_new_manifest_rows_add_shards_for_those_rows_only(corpus, tiny_clip, extracted, tmp_path):
    out = tmp_path / "incremental"
    shutil.copytree(extracted[0], out)
    before = shard_digests(out)
    table = pq.read_table(corpus.manifest)
    good = table.filter(pa.compute.is_in(table["clip_id"], value_set=pa.array(sorted(corpus.good_ids()))))
    extra = good.slice(0, 3).set_column(0, "clip_id", pa.array([f"added_{i}" for i in range(3)])).cast(table.schema)
    grown = tmp_path / "manifest_grown.parquet"
    write_manifest(pa.concat_tables([table, extra]), grown)
    report = run_extract(manifest=grown, data_root=corpus.root, out_dir=out, config=config(tiny_clip))
    after = shard_digests(out)
    assert {k: after[k] for k in before} == before  # old shards untouched
    new = sorted(set(after) - set(before))
    assert len(new) == 1 and report["this_run"]["rows_todo"] == 3
    keys = [s["key"] for s in iter_samples([out / "shards" / new[0]])]
    assert keys == ["added_0", "added_1", "added_2"]


def test_killed_run_resumes_to_the_same_shards(corpus, tiny_clip, extracted, tmp_path):
    """kill -9 the whole job mid-run; the re-run finishes only what is missing and matches an uninterrupted run."""
    reference, _ = extracted
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "extract", "--manifest", str(corpus.manifest),
           "--data-root", str(corpus.root), "--out", str(out), "--visual-model", str(tiny_clip),
           "--shard-size", str(SHARD_SIZE)]
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(REPO)}
    log = tmp_path / "killed-run.log"                 # kept: a crash shows here, not as "0 units"
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 240
    units = out / "_work" / "units"
    while time.time() < deadline and proc.poll() is None and not list(units.glob("*.done.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list(units.glob("*.done.json")))
    total_units = len(shard_digests(reference))
    assert 1 <= done_at_kill < total_units, \
        f"kill landed at {done_at_kill}/{total_units} units; the run's output:\n{log.read_text()[-3000:]}"

    report = run_extract(manifest=corpus.manifest, data_root=corpus.root, out_dir=out, config=config(tiny_clip))
    assert report["this_run"]["units_done_before"] == done_at_kill
    assert report["this_run"]["units_written"] == total_units - done_at_kill
    for name in ("index.parquet", "rejects.parquet"):
        a = pq.read_table(reference / name).select([0, 1]).to_pylist()
        b = pq.read_table(out / name).select([0, 1]).to_pylist()
        assert a == b, name  # same keys in the same shards, same rejects
    for shard in sorted((reference / "shards").glob("*.tar")):
        ref = list(iter_samples([shard]))
        got = list(iter_samples([out / "shards" / shard.name]))
        assert [s["key"] for s in ref] == [s["key"] for s in got]
        for r, g in zip(ref, got):
            assert r["meta"] == g["meta"] and r["flac"] == g["flac"]
            for name in ("mel", "phones"):
                assert (r["arrays"][name] is None and g["arrays"][name] is None) or \
                    np.array_equal(r["arrays"][name], g["arrays"][name])
            # a clip's features do not depend on the clips that shared its encoder batch: equal to the bit
            assert (r["arrays"]["video"] is None and g["arrays"]["video"] is None) or \
                np.array_equal(r["arrays"]["video"], g["arrays"]["video"])


def test_output_made_with_other_features_is_refused(corpus, extracted, tmp_path):
    from stages.visual import make_tiny_clip

    other = make_tiny_clip(tmp_path / "other-clip", hidden_size=48)
    with pytest.raises(ContractError, match="different features"):
        run_extract(manifest=corpus.manifest, data_root=corpus.root, out_dir=extracted[0], config=config(other))


def test_a_second_writer_is_refused_while_a_run_holds_the_output(corpus, tiny_clip, extracted):
    from filelock import FileLock

    from pipeline.jobs.runner import OutputBusy

    out, _ = extracted
    with FileLock(str(out / "_work.lock")):
        with pytest.raises(OutputBusy, match="another run is writing"):
            run_extract(manifest=corpus.manifest, data_root=corpus.root, out_dir=out, config=config(tiny_clip))


def test_several_windows_give_the_same_shards(corpus, tiny_clip, extracted, tmp_path):
    """Windows of whole units (a window never splits a unit) end exactly as one window does."""
    from pipeline.jobs.runner import RunOptions

    out = tmp_path / "windows"
    report = run_extract(manifest=corpus.manifest, data_root=corpus.root, out_dir=out, config=config(tiny_clip),
                         options=RunOptions(window_rows=18))
    sizes = OutputDir(out).plan().group_by("unit").aggregate([("clip_id", "count")]).sort_by("unit")
    windows, rows = 0, 0
    for n in sizes["clip_id_count"].to_pylist():   # a window closes at the first unit end at or past 18 rows
        rows += n
        if rows >= 18:
            windows, rows = windows + 1, 0
    windows += rows > 0
    assert report["this_run"]["windows"] == windows > 1, sizes.to_pylist()
    for name in ("index.parquet", "rejects.parquet"):
        assert pq.read_table(out / name).select([0, 1]).to_pylist() == \
            pq.read_table(extracted[0] / name).select([0, 1]).to_pylist(), name


def test_rows_removed_from_an_unfinished_unit_stop_the_job(corpus, tiny_clip, tmp_path):
    from manifests.errors import PipelineError
    from pipeline.jobs.runner import RunOptions

    out = tmp_path / "removed"
    run_extract(manifest=corpus.manifest, data_root=corpus.root, out_dir=out, config=config(tiny_clip),
                options=RunOptions(max_units=1))
    table = pq.read_table(corpus.manifest)
    shrunk = tmp_path / "shrunk.parquet"
    write_manifest(table.slice(0, table.num_rows - 1), shrunk)   # the last row's unit is not finished
    with pytest.raises(PipelineError, match=r"no longer holds rows planned for unfinished units \[\d+\] "
                                            r"\(rows removed\?\)"):
        run_extract(manifest=shrunk, data_root=corpus.root, out_dir=out, config=config(tiny_clip))
