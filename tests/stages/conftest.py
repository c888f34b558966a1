"""Fixtures shared by the stage tests."""

from __future__ import annotations

import collections

import pyarrow.parquet as pq
import pytest

from stages.format.shard_io import ShardReader, decode_sample


@pytest.fixture(scope="module")
def sources(extracted):
    """The shared extract output's samples by task, and a loader that decodes one by its index row."""
    out, _ = extracted
    rows = pq.read_table(out / "index.parquet").to_pylist()
    for r in rows:
        r["shard"] = str(out / r["shard"])
    reader = ShardReader()
    by_task = collections.defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r)
    load = lambda r: decode_sample(reader.read(r["shard"], r["key"]))  # noqa: E731
    return by_task, load
