"""What a run logs: RUN/metrics.jsonl and TensorBoard events in RUN/tensorboard, the same scalars in both.

metrics.jsonl holds one JSON line per log / eval: step, loss (and per task), lr, grad norm, steps/s, samples/s,
share of step time spent waiting for data, validation loss. TensorBoard is read by people; the lines are what the
tests, benchmarks and scripts read (`read_metrics`). A resumed run first drops the records past its checkpoint's step
(the rewrite goes through `manifests.atomic`; TensorBoard's purge_step does the same for its events), so no step is
logged twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from manifests.atomic import atomic_write_text

METRICS = "metrics.jsonl"


class Metrics:
    """RUN/metrics.jsonl, append-only, and TensorBoard events in RUN/tensorboard, from `resume_step` on."""

    def __init__(self, path: Path, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(f"{line}\n" for line in kept))
        self._file = open(path, "a")
        self._tensorboard = SummaryWriter(log_dir=str(path.parent / "tensorboard"), purge_step=resume_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()
        step = record.get("step", 0)
        for key, value in record.items():
            values = value.items() if isinstance(value, dict) else [(None, value)]
            for sub, v in values:
                if key != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tensorboard.add_scalar(f"{key}/{sub}" if sub else key, v, step)

    def close(self) -> None:
        self._file.close()
        self._tensorboard.close()


@dataclass
class LogWindow:
    """Sums over the steps since the last log record, and the record they make."""

    loss: float = 0.0
    steps: int = 0
    wait: float = 0.0                                          # seconds spent waiting for batches
    by_task: dict = field(default_factory=dict)               # task -> (sum of per-sample losses, samples)
    t0: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, losses: Sequence[float], tasks: Sequence[str], waited: float) -> None:
        self.loss += loss
        self.steps += 1
        self.wait += waited
        for task, value in zip(tasks, losses):
            s, n = self.by_task.get(task, (0.0, 0))
            self.by_task[task] = (s + value, n + 1)

    def record(self, step: int, lr: float, grad_norm: float, samples_per_step: int) -> dict[str, Any]:
        """Mean loss (overall and per task), lr, gradient norm, throughput, share of the time spent waiting for data."""
        elapsed = time.perf_counter() - self.t0
        return {"step": step, "loss": self.loss / self.steps, "lr": lr, "grad_norm": grad_norm,
                "steps_per_s": self.steps / elapsed, "samples_per_s": self.steps * samples_per_step / elapsed,
                "data_wait_frac": self.wait / elapsed,
                **{f"loss_{t}": s / n for t, (s, n) in sorted(self.by_task.items())}}


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """Every record of RUN/metrics.jsonl, in order (empty when the run has logged nothing)."""
    path = Path(run) / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
