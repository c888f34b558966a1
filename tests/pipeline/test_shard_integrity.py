"""Shards are re-checked: a damaged, truncated or deleted shard is found (status, inspect, the trainer's loader) and
redone by a re-run; edited manifest rows are reported and redone on request; hostile indexes are refused."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from manifests.schema import write_manifest
from pipeline.cli.app import app
from pipeline.jobs.extract import run_extract
from pipeline.jobs.runner import RunOptions
from stages.format.layout import OutputDir
from stages.format.shard_io import iter_samples
from tests.conftest import extract_config as config

runner = CliRunner()


def cli(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, " ".join(result.output.split())


def assert_same_samples(reference, out, shard: str) -> None:
    """The same keys with the same members; video features equal to the bit although encoder batches differ."""
    ref, got = list(iter_samples([reference / shard])), list(iter_samples([out / shard]))
    assert [s["key"] for s in ref] == [s["key"] for s in got]
    for r, g in zip(ref, got):
        assert r["meta"] == g["meta"] and r["flac"] == g["flac"]
        for name in ("mel", "phones"):
            assert (r["arrays"][name] is None) == (g["arrays"][name] is None)
            assert r["arrays"][name] is None or np.array_equal(r["arrays"][name], g["arrays"][name])
        assert (r["arrays"]["video"] is None) == (g["arrays"]["video"] is None)
        assert r["arrays"]["video"] is None or np.array_equal(r["arrays"]["video"], g["arrays"]["video"])


def test_damaged_truncated_and_deleted_shards_are_found_and_redone(corpus, tiny_clip, extracted, tmp_path):
    reference = extracted[0]
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    index = pq.read_table(out / "index.parquet")
    shards = sorted(set(index["shard"].to_pylist()))
    flipped, truncated, deleted = shards[0], shards[1], shards[2]
    data = bytearray((out / flipped).read_bytes())
    data[len(data) // 2] ^= 0xFF                      # one flipped byte in the middle: same size
    (out / flipped).write_bytes(bytes(data))
    (out / truncated).write_bytes((out / truncated).read_bytes()[:3000])
    (out / deleted).unlink()

    code, said = cli("status", out)                   # sizes are always compared
    assert code == 1 and f"{truncated}: size 3000 bytes" in said and f"{deleted}: missing" in said
    assert flipped not in said
    code, said = cli("status", out, "--verify")       # the checksum finds the flipped byte
    assert code == 1 and f"{flipped}: checksum differs" in said
    victim = index.filter(pc.equal(index["shard"], flipped))["key"][0].as_py()
    code, said = cli("inspect", out, "--key", victim)
    assert code == 1 and "is damaged: checksum differs" in said and "contract ok" not in said

    report = run_extract(manifest=corpus.manifest, data_root=corpus.root, out_dir=out, config=config(tiny_clip),
                         options=RunOptions(verify=True))
    damaged = report["this_run"]["units_damaged"]
    assert sorted(damaged.values()) == sorted([f"{flipped}: checksum differs from the recorded one (the file "
                                               "was changed or damaged)", f"{truncated}: size 3000 bytes, "
                                               f"recorded {(reference / truncated).stat().st_size}",
                                               f"{deleted}: missing"])
    assert report["this_run"]["units_written"] == 3 and report["counts"]["unaccounted"] == 0
    for shard in (flipped, truncated, deleted):
        assert_same_samples(reference, out, shard)
    assert cli("status", out, "--verify")[0] == 0
    assert pq.read_table(out / "index.parquet").select(["key", "shard"]).to_pylist() == \
        index.select(["key", "shard"]).to_pylist()


def test_the_trainer_refuses_a_damaged_shard_naming_it(extracted, tmp_path):
    from model.data import DataError, SamplePrep, TrainLoader, plan_pretrain

    out = tmp_path / "out"
    shutil.copytree(extracted[0], out)
    shard = sorted((out / "shards").glob("*.tar"))[0]
    data = bytearray(shard.read_bytes())
    data[-5000] ^= 0x01
    shard.write_bytes(bytes(data))
    plan = plan_pretrain([out], val_samples=0)
    loader = TrainLoader(plan, SamplePrep(contract=plan.contract, audio_mean=-6.0, audio_std=2.3), batch_size=4,
                         seed=0, num_workers=0, epoch_steps=50)
    with pytest.raises(DataError, match=rf"{shard.name} is damaged: its checksum differs"):
        for _ in zip(range(50), loader.batches()):
            pass
    shard.write_bytes(bytes(data[:2000]))             # a truncated shard is refused when the run is planned
    with pytest.raises(DataError, match=rf"{shard.name}'?: size 2000 bytes"):
        plan_pretrain([out], val_samples=0)


def test_edited_rows_are_reported_then_redone_on_request(corpus, tiny_clip, extracted, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(extracted[0], out)
    table = pq.read_table(corpus.manifest)
    rows = table.to_pylist()
    rejects = {r["clip_id"]: r for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    missing = next(r for r in rows if rejects.get(r["clip_id"], {}).get("reason") == "missing_file")
    tts = next(r for r in rows if r["task"] == "tts" and r["clip_id"] in corpus.good_ids())
    donor = next(r for r in rows if r["clip_id"] in corpus.good_ids() and r["task"] == missing["task"])
    for key in ("video_path", "audio_path"):
        missing[key] = donor[key]                     # the path is fixed
    tts["transcript"] = "A new sentence for this clip."   # the transcript is edited
    edited = tmp_path / "edited.parquet"
    write_manifest(pa.Table.from_pylist(rows, schema=table.schema), edited)
    before = {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")}

    report = run_extract(manifest=edited, data_root=corpus.root, out_dir=out, config=config(tiny_clip))
    run = report["this_run"]
    assert run["rows_changed"] == 2 and set(run["rows_changed_listed"]) == {missing["clip_id"], tts["clip_id"]}
    assert run["units_redone"] == 0 and len(run["units_changed_kept"]) >= 1 and run["rows_todo"] == 0
    assert {p.name: p.read_bytes() for p in (out / "shards").glob("*.tar")} == before

    report = run_extract(manifest=edited, data_root=corpus.root, out_dir=out, config=config(tiny_clip),
                         options=RunOptions(redo_changed=True))
    assert report["this_run"]["units_redone"] == len(run["units_changed_kept"])
    assert report["this_run"]["units_changed_kept"] == [] and report["counts"]["unaccounted"] == 0
    kept = set(pq.read_table(out / "index.parquet")["key"].to_pylist())
    assert missing["clip_id"] in kept and missing["clip_id"] not in \
        set(pq.read_table(out / "rejects.parquet")["clip_id"].to_pylist())
    sample = next(s for s in iter_samples([OutputDir(out).find(tts["clip_id"])]) if s["key"] == tts["clip_id"])
    assert sample["meta"]["transcript"] == "A new sentence for this clip."
    again = run_extract(manifest=edited, data_root=corpus.root, out_dir=out, config=config(tiny_clip))
    assert again["this_run"]["rows_changed"] == 0 and again["this_run"]["rows_todo"] == 0


def test_synth_mix_refuses_a_source_index_naming_a_shard_outside_it(extracted, tmp_path):
    from pipeline.jobs.synth_mix import SynthMixConfig, run_synth_mix
    from stages.format.layout import NotAnOutput

    src = tmp_path / "src"
    shutil.copytree(extracted[0], src)
    outside = tmp_path / "elsewhere.tar"
    shutil.copy(sorted((src / "shards").glob("*.tar"))[0], outside)
    index = pq.read_table(src / "index.parquet")
    escaped = ["../../elsewhere.tar"] + index["shard"].to_pylist()[1:]
    pq.write_table(index.set_column(index.schema.get_field_index("shard"), "shard", pa.array(escaped)),
                   src / "index.parquet")
    with pytest.raises(NotAnOutput, match=r"shard '\.\./\.\./elsewhere\.tar' lies outside"):
        run_synth_mix(speech_dirs=[src], sound_dirs=[src], out_dir=tmp_path / "mix",
                      config=SynthMixConfig(count=4, shard_size=4))
    assert not (tmp_path / "mix").exists()


def test_a_second_synth_mix_cannot_touch_recipes_it_does_not_own(extracted, tmp_path):
    from pipeline.errors import OutputBusy
    from pipeline.jobs.runner import output_lock
    from pipeline.jobs.synth_mix import SynthMixConfig, run_synth_mix

    out = tmp_path / "mix"
    run_synth_mix(speech_dirs=[extracted[0]], sound_dirs=[extracted[0]], out_dir=out,
                  config=SynthMixConfig(count=40, shard_size=4), options=RunOptions(max_units=0))  # plan only
    planned = (out / "mixtures.parquet").read_bytes()
    with output_lock(out):                            # a first run is going on
        with pytest.raises(OutputBusy, match="another run is writing"):
            run_synth_mix(speech_dirs=[extracted[0]], sound_dirs=[extracted[0]], out_dir=out,
                          config=SynthMixConfig(count=80, shard_size=4))
    assert (out / "mixtures.parquet").read_bytes() == planned and pq.read_table(out / "mixtures.parquet").num_rows == 40
