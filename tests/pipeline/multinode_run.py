"""Run an extract on a three-node Ray cluster on this machine and remove a worker node mid-job.

    python -m tests.pipeline.multinode_run MANIFEST DATA_ROOT OUT MODEL_DIR SHARD_SIZE

Ray's cluster utilities for tests (`ray.cluster_utils.Cluster`) start a head without CPUs and two worker nodes of
one CPU each, every address on 127.0.0.1. This process is the job's driver; when the first unit is recorded, it
removes one of the two worker nodes (its raylet and workers are killed, with the unit it was running) and
the job goes on with the other.
Prints one JSON line: the units done when the node went, and the job's report. A script of its own because a
process holds one Ray connection, and the test process already has its embedded Ray.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(manifest: str, data_root: str, out: str, model_dir: str, shard_size: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from pipeline.jobs.extract import ExtractConfig, run_extract
    from stages.format.layout import OutputDir
    from stages.visual import VisualConfig

    loopback = {"node_ip_address": "127.0.0.1", "object_store_memory": 100 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={**loopback, "num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(**loopback, num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    removed: dict[str, int] = {}

    def remove_a_node(event: dict) -> None:
        if not removed:
            removed["units_done"] = len(OutputDir(out).done_units())
            removed["alive_before"] = sum(n["Alive"] for n in ray.nodes())
            cluster.remove_node(workers[0], allow_graceful=False)

    try:
        config = ExtractConfig(visual=VisualConfig(model_dir=model_dir), shard_size=int(shard_size))
        report = run_extract(manifest=Path(manifest), data_root=Path(data_root), out_dir=Path(out), config=config,
                             address=cluster.address, progress=remove_a_node)
        removed["alive_after"] = sum(n["Alive"] for n in ray.nodes())
        print(json.dumps({"removed": removed, "report": report}, default=str))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
