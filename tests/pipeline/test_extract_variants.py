"""Extract with a VAE directory: latents at 25 fps, mean then log-variance, recorded in dataset.json."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests.schema import write_manifest
from pipeline.jobs.extract import run_extract
from stages.format.contract import check_sample, read_dataset_json
from stages.format.shard_io import iter_samples
from tests.conftest import extract_config


def test_latents_are_stored_and_checked(corpus, tiny_clip, tiny_vae, ray_session, tmp_path):
    table = pq.read_table(corpus.manifest)
    ids = sorted(corpus.good_ids())[:5] + ["bad_missing_file"]
    manifest = write_manifest(table.filter(pc.is_in(table["clip_id"], value_set=pa.array(ids))), tmp_path / "m.parquet")
    config = extract_config(tiny_clip)
    config = type(config)(**{**config.__dict__, "latent": type(config.latent)(vae_dir=str(tiny_vae))})
    report = run_extract(manifest=manifest, data_root=corpus.root, out_dir=tmp_path / "out", config=config)
    assert report["counts"]["kept"] == 5 and report["counts"]["rejected"] == 1
    assert "latent" in report["stage_seconds"]
    contract, _ = read_dataset_json(tmp_path / "out")
    assert contract.latent["fps"] == 25 and contract.latent["channels"] == 128 and contract.latent["random_init"]
    for s in iter_samples(sorted((tmp_path / "out" / "shards").glob("*.tar"))):
        latent, mel = s["arrays"]["latent"], s["arrays"]["mel"]
        assert latent.shape == (len(mel) // 4, 256)
        assert check_sample(s["meta"], s["arrays"], contract) == []


def test_split_placement_gives_the_same_samples(corpus, tiny_clip, extracted, ray_session, tmp_path):
    """The GPU-cluster graph (CPU tasks -> encoder actor pool), forced on CPU, writes what the fused graph wrote."""
    from dataclasses import replace

    import numpy as np

    table = pq.read_table(corpus.manifest)
    ids = sorted(corpus.good_ids())[:6] + ["bad_no_audio", "bad_silent"]
    manifest = write_manifest(table.filter(pc.is_in(table["clip_id"], value_set=pa.array(ids))), tmp_path / "m.parquet")
    config = extract_config(tiny_clip)
    config = replace(config, visual=replace(config.visual, placement="split"))
    report = run_extract(manifest=manifest, data_root=corpus.root, out_dir=tmp_path / "out", config=config)
    assert report["counts"]["kept"] == 6 and report["counts"]["rejected"] == 2
    fused = {s["key"]: s for s in iter_samples(sorted((extracted[0] / "shards").glob("*.tar")))}
    for s in iter_samples(sorted((tmp_path / "out" / "shards").glob("*.tar"))):
        ref = fused[s["key"]]
        assert s["meta"] == ref["meta"] and s["flac"] == ref["flac"]
        assert np.array_equal(s["arrays"]["mel"], ref["arrays"]["mel"])
        if ref["arrays"]["video"] is not None:
            assert np.array_equal(s["arrays"]["video"], ref["arrays"]["video"])   # other batches, same bits
