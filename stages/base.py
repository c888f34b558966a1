"""The stage protocol shared by every per-sample transform.

A stage keeps only plain config in `__init__`, loads heavy things (models, backends) once in
`setup()`, and transforms a batch of rows in `__call__`. A row is a plain dict. A stage either
fills in its outputs or marks the row rejected with a reason; later stages pass rejected rows
through untouched. The same stage objects run under Ray Data (`pipeline/`) and in a plain loop.

Row conventions:
  reject_stage / reject_reason / reject_detail   None while the row is alive
  t_<stage>                                      seconds this stage spent on the row (its share of the batch)
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Iterable

Row = dict[str, Any]


class Reject(Exception):
    """An application-level refusal of one sample: it becomes a reject row, never a retry."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def is_alive(row: Row) -> bool:
    return row.get("reject_reason") is None


def mark_rejected(row: Row, stage: str, reason: str, detail: str = "") -> None:
    row["reject_stage"] = stage
    row["reject_reason"] = reason
    row["reject_detail"] = detail[:2000]


class Stage:
    """Base class: subclasses implement `process(row)` or, for batched inference, `process_batch(rows)`."""

    name: ClassVar[str] = "stage"

    def __init__(self) -> None:
        self._ready = False

    def setup(self) -> None:
        """Load models and backends. Runs once per worker, lazily, before the first batch."""

    def process(self, row: Row) -> None:
        raise TypeError(f"{type(self).__name__} overrides neither process() nor process_batch()")  # a programming error

    def process_batch(self, rows: list[Row]) -> None:
        for row in rows:
            self.guarded(row, self.process, row)

    def guarded(self, row: Row, fn, *args) -> None:
        """Run fn; a Reject (or any unexpected error) rejects this row only, with a readable reason."""
        try:
            fn(*args)
        except Reject as r:
            mark_rejected(row, self.name, r.reason, r.detail)
        except Exception as e:  # noqa: BLE001 - one bad sample must not end the job; the reason is recorded
            mark_rejected(row, self.name, "unexpected_error", f"{type(e).__name__}: {e}")

    def __call__(self, rows: Iterable[Row]) -> list[Row]:
        rows = list(rows)
        for r in rows:
            if "reject_reason" not in r:
                r.update(reject_stage=None, reject_reason=None, reject_detail=None)
        if not self._ready:
            self.setup()
            self._ready = True
        live = [r for r in rows if is_alive(r)]
        start = time.perf_counter()
        if live:
            self.process_batch(live)
        share = (time.perf_counter() - start) / max(len(live), 1)
        for r in live:
            r[f"t_{self.name}"] = share
        return rows
