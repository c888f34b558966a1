"""Training on several workers: the trainer's loop inside Ray Train (`TorchTrainer`).

One process is the default (model/train.py, with its own DataLoader workers). With --num-workers N the same loop
runs in N Ray Train workers (torch.distributed with gloo on CPU or NCCL on GPUs, one GPU each with --use-gpu);
rank 0 validates and writes RUN's checkpoints and metrics. On a multi-node cluster RUN and the data folders must be
on storage every node sees. The driver follows RUN/metrics.jsonl to show progress, since the loop's callback runs
in the workers.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from manifests.errors import UsageError
from model.train import read_report
from pipeline.jobs.ray_exec import init_ray

JOBS = ("pretrain", "finetune")
PATH_ARGS = frozenset({"data_dirs", "mix_dirs", "real_joint_dirs", "out", "init_ckpt"})


def _ray_worker(loop_config: dict[str, Any]) -> None:
    """Runs in each Ray Train worker: torch.distributed is initialised; the device is the one Ray gave us."""
    import ray.train.torch

    from model import train as trainer

    kwargs = dict(loop_config["kwargs"])
    kwargs["config"] = dataclasses.replace(kwargs["config"], device=str(ray.train.torch.get_device()))
    getattr(trainer, f"run_{loop_config['job']}")(**kwargs)


def run_distributed(job: str, *, num_workers: int, use_gpu: bool = False, address: Optional[str] = None,
                    cpus_per_worker: Optional[float] = None,
                    progress: Optional[Callable[[dict[str, Any]], None]] = None, **job_kwargs: Any) -> dict[str, Any]:
    """Run model.train.run_<job>(**job_kwargs) in `num_workers` Ray Train workers; returns RUN/report.json.

    Paths are made absolute (workers do not share the driver's working directory). cpus_per_worker: logical CPUs a
    worker asks Ray for (None: Ray Train's default). While it runs, `progress` gets RUN/metrics.jsonl's new lines,
    as the single-process loop would send them.
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer


    if job not in JOBS:
        raise UsageError(f"job must be one of {JOBS}, got {job!r}")
    if num_workers < 1:
        raise UsageError(f"--num-workers must be >= 1, got {num_workers}")
    kwargs = {k: _absolute(k, v) for k, v in job_kwargs.items()}
    out = Path(kwargs["out"])
    out.mkdir(parents=True, exist_ok=True)
    where = init_ray(address)
    if where.startswith("embedded"):   # nothing will join a local Ray: fail now rather than wait for resources
        import ray

        have = ray.cluster_resources()
        need = {"GPU": num_workers if use_gpu else 0,
                "CPU": num_workers * (cpus_per_worker if cpus_per_worker is not None else (0 if use_gpu else 1))}
        short = {k: f"{v:g} needed, {have.get(k, 0):g} here" for k, v in need.items() if v > have.get(k, 0)}
        if short:
            raise UsageError(f"the embedded Ray cannot host {num_workers} training workers: {short}; lower "
                             "--num-workers, or pass --address of a cluster that has them")
    trainer = TorchTrainer(_ray_worker, train_loop_config={"job": job, "kwargs": kwargs},
                           scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                                        resources_per_worker=None if cpus_per_worker is None
                                                        else {"CPU": cpus_per_worker}),
                           run_config=RunConfig(storage_path=str(out / "ray"), name=job))
    with _follow_metrics(out, kwargs["config"].steps, progress):
        trainer.fit()
    return read_report(out)


def _absolute(name: str, value: Any) -> Any:
    if name in PATH_ARGS and value is not None:
        if isinstance(value, (list, tuple)):
            return [str(Path(v).resolve()) for v in value]
        return str(Path(value).resolve())
    return value


@contextmanager
def _follow_metrics(out: Path, steps: int, progress) -> Iterator[None]:
    """Feed `progress` from RUN/metrics.jsonl while Ray Train runs (the loop's callback cannot reach the driver)."""
    if progress is None:
        yield
        return
    stop = threading.Event()
    path = out / "metrics.jsonl"
    start = path.stat().st_size if path.exists() else 0

    def follow() -> None:
        offset = start
        while not stop.wait(1.0):
            if not path.exists() or path.stat().st_size < offset:
                offset = 0 if path.exists() else offset   # rewritten on resume: read it again
                continue
            with open(path) as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            offset += len(complete.encode())
            for line in complete.splitlines():
                record = json.loads(line)
                progress({"event": "eval" if "val_loss" in record else "log", "steps": steps, **record})

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
