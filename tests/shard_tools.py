"""Test helpers for tests that rewrite shards on purpose (as a writer would): the index's recorded sizes and
checksums follow, so what a test then checks is the rewritten content, not the checksum guard; and an extract
output with VAE latents added (as --vae would have made it)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stages.format.layout import file_checksum


def rerecord_shards(folder: Path) -> None:
    """Set index.parquet's shard_size / shard_sha256 to what the folder's shards are now."""
    index = pq.read_table(folder / "index.parquet")
    shards = index["shard"].to_pylist()
    sha = {s: file_checksum(folder / s) for s in set(shards)}
    size = {s: (folder / s).stat().st_size for s in set(shards)}
    for column, values, kind in (("shard_sha256", [sha[s] for s in shards], pa.string()),
                                 ("shard_size", [size[s] for s in shards], pa.int64())):
        index = index.set_column(index.schema.get_field_index(column), column, pa.array(values, kind))
    pq.write_table(index, folder / "index.parquet")


def with_latents(out: Path, dst: Path, vae_dir: Path) -> Path:
    """A copy of an extract output with VAE latents added by the extract's own LatentStage (as --vae would)."""
    import dataclasses
    import shutil

    from stages.format.contract import read_dataset_json, write_dataset_json
    from stages.format.shard_io import AtomicShardWriter, iter_samples, sample_members
    from stages.latent import LatentStage, latent_contract

    contract, doc = read_dataset_json(out)
    stage = LatentStage(vae_dir=str(vae_dir))
    for shard in sorted((out / "shards").glob("*.tar")):
        samples = list(iter_samples([shard]))
        rows = stage([{"mel": s["arrays"]["mel"]} for s in samples])
        with AtomicShardWriter(dst / "shards" / shard.name) as writer:
            for s, row in zip(samples, rows, strict=True):
                writer.write(sample_members(s["key"], s["meta"], dict(s["arrays"], latent=row["latent"]), s["flac"]))
    shutil.copy(out / "index.parquet", dst / "index.parquet")
    rerecord_shards(dst)
    write_dataset_json(dst, dataclasses.replace(contract, latent=latent_contract(vae_dir)), job=doc["job"],
                       config=doc["config"])
    return dst
