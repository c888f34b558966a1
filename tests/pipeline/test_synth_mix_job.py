"""The synth-mix job through Ray on extracted sample shards: contract, determinism, resume, growth, rebuild."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli.app import app
from pipeline.jobs.runner import RunOptions
from pipeline.jobs.synth_mix import SynthMixConfig, run_synth_mix
from stages.format.contract import ContractError, check_sample, read_dataset_json, write_dataset_json
from stages.format.shard_io import iter_samples


def digests(out):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*.tar"))}


def mix(src, out, count, **kw):
    config = SynthMixConfig(count=count, seed=kw.pop("seed", 0), shard_size=4, **kw)
    return run_synth_mix(speech_dirs=[src], sound_dirs=[src], out_dir=out, config=config)


def test_mixtures_honour_the_contract_and_read_with_plain_webdataset(extracted, mixed):
    out, report = mixed
    assert report["counts"]["kept"] == 12 and report["counts"]["rejected"] == 0
    contract, doc = read_dataset_json(out)
    source_contract, _ = read_dataset_json(extracted[0])
    assert doc["job"] == "synth-mix" and contract.feature_hash == source_contract.feature_hash
    samples = list(iter_samples(sorted((out / "shards").glob("synth-mix-*.tar"))))
    assert len(samples) == 12 and len({s["key"] for s in samples}) == 12
    for s in samples:
        assert check_sample(s["meta"], s["arrays"], contract) == [], s["key"]
        assert s["meta"]["task"] == "joint" and s["meta"]["recipe"]["mode"] in ("add", "insert", "sound_only")
    index = pq.read_table(out / "index.parquet")
    assert set(index["mode"].to_pylist()) <= {"add", "insert", "sound_only"}
    assert (out / "mixtures.parquet").is_file()


def test_same_arguments_give_the_same_mixtures_bit_for_bit(extracted, mixed, tmp_path):
    again = tmp_path / "again"
    mix(extracted[0], again, 12)
    assert digests(again) == digests(mixed[0])


def test_rerun_does_nothing_and_more_count_adds_shards_only(extracted, mixed, tmp_path):
    out = tmp_path / "grow"
    shutil.copytree(mixed[0], out)
    before = digests(out)
    assert mix(extracted[0], out, 12)["this_run"]["rows_todo"] == 0
    report = mix(extracted[0], out, 16)
    after = digests(out)
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 1
    assert report["this_run"]["rows_todo"] == 4
    with pytest.raises(ValueError, match="can grow, not shrink"):
        mix(extracted[0], out, 8)
    with pytest.raises(ValueError, match="seed"):
        mix(extracted[0], out, 16, seed=5)


def test_stopped_run_resumes_to_the_same_shards(extracted, mixed, tmp_path):
    from pipeline.jobs.synth_mix import run_synth_mix as run

    out = tmp_path / "resume"
    config = SynthMixConfig(count=12, shard_size=4)
    partial = run(speech_dirs=[extracted[0]], sound_dirs=[extracted[0]], out_dir=out, config=config, options=RunOptions(max_units=1))
    assert partial["counts"]["unaccounted"] == 8
    mix(extracted[0], out, 12)
    assert digests(out) == digests(mixed[0])


def test_rebuild_from_recipe_is_identical(mixed):
    out, _ = mixed
    key = pq.read_table(out / "index.parquet")["key"][3].as_py()
    result = CliRunner().invoke(app, ["mix", "rebuild", str(out), "--key", key])
    assert result.exit_code == 0, result.output
    assert "identical" in result.output and "DIFFERENT" not in result.output


def test_rebuild_says_when_a_stored_mixture_was_tampered_with(mixed, tmp_path):
    import io
    import tarfile

    import numpy as np

    out = tmp_path / "tampered"
    shutil.copytree(mixed[0], out)
    index = pq.read_table(out / "index.parquet")
    key, shard = index["key"][3].as_py(), out / index["shard"][3].as_py()
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            if m.name == f"{key}.mel.npy":              # a quieter mel than the recipe makes
                mel = np.load(io.BytesIO(data))
                buf = io.BytesIO()
                np.save(buf, (mel.astype(np.float32) - 1.0).astype(mel.dtype))
                data = buf.getvalue()
            tar.addfile(m, io.BytesIO(data))
    result = CliRunner().invoke(app, ["mix", "rebuild", str(out), "--key", key])
    said = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 1, said
    assert "mel.npy DIFFERENT: max |diff| 1.00e+00" in said and "the rebuilt mixture differs" in said
    assert "audio.flac identical" in said


def test_sources_with_other_features_are_refused_before_work(extracted, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(extracted[0], other)
    contract, doc = read_dataset_json(other)
    write_dataset_json(other, replace(contract, video_dim=48), job="extract", config=doc["config"])
    with pytest.raises(ContractError, match="different features.*video_dim"):
        run_synth_mix(speech_dirs=[extracted[0]], sound_dirs=[other], out_dir=tmp_path / "o",
                      config=SynthMixConfig(count=2))
    assert not (tmp_path / "o").exists()


def test_a_missing_source_sample_rejects_only_its_mixtures(extracted, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(extracted[0], src)
    out = tmp_path / "o"
    config = SynthMixConfig(count=12, shard_size=4)
    run_synth_mix(speech_dirs=[src], sound_dirs=[src], out_dir=out, config=config, options=RunOptions(max_units=0))  # plan only
    recipes = pq.read_table(out / "mixtures.parquet").to_pylist()
    victim = recipes[0]["sound_shard"]
    (src / "shards" / victim.split("/")[-1]).unlink()
    report = run_synth_mix(speech_dirs=[src], sound_dirs=[src], out_dir=out, config=config)
    hit = {r["key"] for r in recipes if victim in (r["sound_shard"], r["speech_shard"])}
    rejects = pq.read_table(out / "rejects.parquet").to_pylist()
    assert {r["clip_id"] for r in rejects} == hit and all(r["reason"] == "missing_source" for r in rejects)
    assert report["counts"]["kept"] == 12 - len(hit) and report["counts"]["unaccounted"] == 0


def test_shard_paths_select_sources(extracted, tmp_path):
    src = extracted[0]
    shard = next(p for p in sorted((src / "shards").glob("*.tar"))
                 if any(s["meta"]["task"] == "v2s" for s in iter_samples([p])))
    run_synth_mix(speech_dirs=[src], sound_dirs=[shard], out_dir=tmp_path / "o",
                  config=SynthMixConfig(count=3, shard_size=4))
    in_shard = {s["key"] for s in iter_samples([shard]) if s["meta"]["task"] == "v2s"}
    used = {r["sound_key"] for r in pq.read_table(tmp_path / "o" / "index.parquet").to_pylist()}
    assert used and used <= in_shard


def test_the_trainer_loader_reads_mixtures_with_the_same_contract_checks(extracted, mixed, tmp_path):
    """Interop: fine-tuning batches come from the mixture shards (joint samples with video and phonemes), and a
    mixture that breaks dataset.json makes the loader fail loudly, exactly as for extract shards."""
    import json
    import tarfile

    from model.data import DataError, SamplePrep, TrainLoader, plan_finetune
    from tests.shard_tools import rerecord_shards

    out, _ = mixed
    data = plan_finetune([out], [], 1.0, val_samples=0)
    prep = SamplePrep(contract=data.contract, audio_mean=-6.0, audio_std=2.3)
    batch = next(TrainLoader(data, prep, batch_size=4, seed=0, num_workers=0).batches())
    assert set(batch["task"]) == {"joint"}
    assert batch["video_mask"].any(dim=1).all() and (batch["phones_track"] > 0).any(dim=1).all()

    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    for shard in sorted((broken / "shards").glob("*.tar")):  # every sample claims 3 s more than it holds
        with tarfile.open(shard) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        with tarfile.open(shard, "w") as tar:
            for m, data_bytes in members:
                if m.name.endswith(".json"):
                    meta = json.loads(data_bytes)
                    meta["duration_s"] += 3.0
                    data_bytes = json.dumps(meta).encode()
                    m.size = len(data_bytes)
                tar.addfile(m, __import__("io").BytesIO(data_bytes))
    damaged = plan_finetune([broken], [], 1.0, val_samples=0)
    with pytest.raises(DataError, match=r"synth-mix-000000\.tar is damaged: its checksum differs"):
        next(TrainLoader(damaged, SamplePrep(contract=damaged.contract, audio_mean=-6.0, audio_std=2.3),
                         batch_size=4, seed=0, num_workers=0).batches())

    # the same samples written with their checksums recorded (as a writer with a bug would): the contract check
    # is what stops them, naming the sample and the member that disagrees with dataset.json
    rerecord_shards(broken)
    data = plan_finetune([broken], [], 1.0, val_samples=0)
    with pytest.raises(ContractError, match=r"sample 'mix_s0_\d+' does not honour dataset.json: .*(mel|video): "):
        next(TrainLoader(data, SamplePrep(contract=data.contract, audio_mean=-6.0, audio_std=2.3), batch_size=4,
                         seed=0, num_workers=0).batches())


def test_sound_labels_filter_and_voices_are_excluded_by_default(extracted, tmp_path):

    from manifests.tasks import SOUND_SOURCE_TASKS
    from pipeline.jobs.synth_mix import SourceFilter, label_mask, resolve_sources, source_pool

    out = tmp_path / "labelled"
    shutil.copytree(extracted[0], out)
    index = pq.read_table(out / "index.parquet")
    v2s = [k for k, t in zip(index["key"].to_pylist(), index["task"].to_pylist()) if t == "v2s"]
    names = ["male speech, man speaking", "Female Singing", "dog barking", "people whispering", None]
    labels = {k: names[i % len(names)] for i, k in enumerate(v2s)}
    index = index.drop_columns([c for c in ("label",) if c in index.column_names])
    pq.write_table(index.append_column("label", pa.array([labels.get(k) for k in index["key"].to_pylist()],
                                                         pa.string())), out / "index.parquet")
    sources = resolve_sources([out])

    def pool(filt):
        keys = source_pool(sources, SOUND_SOURCE_TASKS, filt, drop_silent=True)["key"].to_pylist()
        return {k: labels[k] for k in keys}

    default = pool(SourceFilter())
    assert default and set(default.values()) <= {"dog barking", None}   # no voice under the mixture's speech
    assert set(pool(SourceFilter(exclude_labels=[])).values()) > set(default.values())
    assert set(pool(SourceFilter(labels=["dog*"])).values()) == {"dog barking"}  # unlabelled: out with an include
    assert label_mask(["A Choir", None, "rain"], None, ["*choir*"]) == [False, True, True]


def test_a_mixture_output_has_a_card_datasets_loads_and_exports_on_its_sound_source_video(mixed, corpus, tmp_path):
    import datasets
    import soundfile as sf
    from decord import VideoReader

    import pipeline
    from pipeline.export import export_sample

    out, _ = mixed
    card = (out / "README.md").read_text()
    assert "config_name: joint" in card and "| synth_sound |" in card   # the sources' datasets, with their licences
    loaded = datasets.load_dataset(str(out), "joint", cache_dir=str(tmp_path / "hf"))
    assert sum(len(split) for split in loaded.values()) == 12
    key = pq.read_table(out / "index.parquet")["key"][0].as_py()
    made = export_sample(out, key, tmp_path / "listen", data_root=corpus.root)
    sample = pipeline.open_output(out)[key]
    wave, _ = sf.read(made["wav"], dtype="float32")
    assert np.array_equal(wave, sample.audio)
    video = VideoReader(made["mp4"])
    assert abs(len(video) / video.get_avg_fps() - sample.meta["duration_s"]) <= 0.1
