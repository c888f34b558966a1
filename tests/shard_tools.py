"""Test helpers for tests that rewrite shards on purpose (as a writer would): the index's recorded sizes and
checksums follow, so what a test then checks is the rewritten content, not the checksum guard."""

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
