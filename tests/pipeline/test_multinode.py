"""A job on a cluster of a head and two worker nodes (Ray's cluster utilities, all on 127.0.0.1) loses a worker
node mid-job: it completes with every row once, in shards identical to a one-node run."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import SHARD_SIZE

REPO = Path(__file__).resolve().parents[2]


def digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*.tar"))}


def test_a_worker_node_removed_mid_job_loses_no_row(corpus, tiny_clip, extracted, tmp_path):
    out = tmp_path / "multinode"
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(REPO), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    done = subprocess.run([sys.executable, "-m", "tests.pipeline.multinode_run", str(corpus.manifest),
                           str(corpus.root), str(out), str(tiny_clip), str(SHARD_SIZE)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    removed, report = result["removed"], result["report"]
    total_units = len(digests(extracted[0]))
    assert removed["alive_before"] == 3 and removed["alive_after"] == 2      # the head and one worker node left
    assert 1 <= removed["units_done"] < total_units, "the node went after the last unit"
    assert report["this_run"]["where"].startswith("ray cluster at")

    manifest_ids = set(pq.read_table(corpus.manifest)["clip_id"].to_pylist())
    kept = pq.read_table(out / "index.parquet")["key"].to_pylist()
    rejected = pq.read_table(out / "rejects.parquet")["clip_id"].to_pylist()
    assert len(kept) + len(rejected) == len(manifest_ids) and set(kept) | set(rejected) == manifest_ids
    for name in ("index.parquet", "rejects.parquet"):
        assert pq.read_table(out / name).select([0, 1]).to_pylist() == \
            pq.read_table(extracted[0] / name).select([0, 1]).to_pylist(), name
    assert digests(out) == digests(extracted[0])                             # byte for byte
    assert not list(out.rglob(".*.tmp"))
