"""What a re-run may trust of what earlier runs left: finished units whose shard is whole and whose inputs are
unchanged.

A unit's ledger entry (done.json) records its shard's size and sha256 and a hash of each input row it was made
from. On a re-run:
- a unit whose shard is missing or has another size (or, with `verify`, another checksum) is damaged: it is
  redone, always (its rows are processed again into the same deterministic shard);
- a unit some of whose input rows changed (a fixed path, an edited transcript) is reported; with `redo_changed` it
  is redone too, otherwise the old shard stays and the report says which rows are stale.
Entries written before the ledger recorded sizes, checksums or input hashes are trusted as they are.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from stages.format.layout import OutputDir

HASH_BATCH_ROWS = 65_536   # rows turned into Python objects at a time while hashing (bounds memory)
ROWS_LISTED = 20           # changed rows named in the report


def input_hashes(rows: pa.Table) -> dict[str, str]:
    """{clip_id: hash of the row's values}: what a unit was made from, so an edited row can be recognised."""
    hashes = {}
    for batch in rows.to_batches(max_chunksize=HASH_BATCH_ROWS):
        for row in batch.to_pylist():
            blob = json.dumps(row, sort_keys=True, default=str).encode()
            hashes[row["clip_id"]] = hashlib.sha256(blob).hexdigest()[:16]
    return hashes


@dataclass
class Resume:
    damaged: dict[int, str] = field(default_factory=dict)          # unit -> why its shard cannot be trusted
    changed: dict[int, list[str]] = field(default_factory=dict)    # unit -> clip_ids edited since it was made
    redo: list[int] = field(default_factory=list)                  # units to do again in this run

    def stats(self) -> dict[str, Any]:
        changed_rows = sorted(c for ids in self.changed.values() for c in ids)
        return {"units_damaged": dict(sorted(self.damaged.items())), "units_redone": len(self.redo),
                "rows_changed": len(changed_rows), "rows_changed_listed": changed_rows[:ROWS_LISTED],
                "units_changed_kept": sorted(set(self.changed) - set(self.redo))}


def check_finished(folder: OutputDir, hashes: dict[str, str], *, verify: bool, redo_changed: bool) -> Resume:
    """Sort the finished units into trusted, damaged and changed (see the module docstring)."""
    resume = Resume(damaged=folder.damaged_units(checksum=verify))
    for summary in folder.unit_summaries():
        unit = int(summary["unit"])
        recorded = summary.get("inputs") or {}
        edited = sorted(c for c, h in recorded.items() if c in hashes and hashes[c] != h)
        if edited:
            resume.changed[unit] = edited
    resume.redo = sorted(set(resume.damaged) | (set(resume.changed) if redo_changed else set()))
    return resume
