"""`pipeline status OUT`: where a job's output stands, read from its files alone (no Ray, nothing changed).

Shards and rows come from the folder and report.json; rejects by reason from rejects.parquet; progress of a run
that is going on (or was killed) from the ledger (`_work/`: units planned and finished); the last runs from
`_work/runs.jsonl`, one line per finished run. The folder may be an object-storage URL.
"""

from __future__ import annotations

import collections
from typing import Any

from manifests import storage
from manifests.storage import Location
from stages.format.layout import NotAnOutput, OutputDir, read_table

RUNS_SHOWN = 5


def output_status(out: Location, *, verify: bool = False) -> dict[str, Any]:
    """Counts of a job output folder (local or on object storage); NotAnOutput when it holds no job output."""
    folder = OutputDir(out)
    report = folder.read_json(folder.report)
    dataset = folder.read_json(folder.dataset_json)
    ledger = bool(folder.plan_files())
    if report is None and not ledger:
        raise NotAnOutput(f"{out} holds no job output (no report.json and no _work/ ledger)")
    shard_files = folder.shard_files()
    rejects_by_reason: collections.Counter = collections.Counter()
    if storage.exists(folder.rejects):
        rejects = read_table(folder.rejects, columns=["stage", "reason"])
        rejects_by_reason.update(f"{s}/{r}" for s, r in zip(rejects["stage"].to_pylist(),
                                                            rejects["reason"].to_pylist()))
    counts = (report or {}).get("counts", {})
    units_done = len(folder.done_units()) if ledger else None
    units_planned = len(set(folder.plan()["unit"].to_pylist())) if ledger else None
    runs = folder.runs()
    return {
        "out": str(out),
        "job": (report or dataset or {}).get("job"),
        "feature_hash": (dataset or {}).get("feature_hash"),
        "shards": len(shard_files),
        "bytes": sum(storage.size(p) or 0 for p in shard_files),
        "rows": counts.get("rows"),
        "kept": counts.get("kept"),
        "rejected": counts.get("rejected"),
        "unaccounted": counts.get("unaccounted"),
        "by_task": counts.get("by_task", {}),
        "rejects_by_reason": dict(sorted(rejects_by_reason.items())),
        "units_planned": units_planned,
        "damaged_units": folder.damaged_units(checksum=verify) if ledger else {},
        "verified_checksums": verify,
        "units_done": units_done,
        # Units finished after the last report: a run is going on, or one stopped before it could report.
        "units_since_report": None if units_done is None else units_done - counts.get("shards", 0),
        "report_finished_at": (report or {}).get("finished_at"),
        "runs": len(runs),
        "last_run": runs[-1] if runs else None,
        "recent_runs": runs[-RUNS_SHOWN:],
    }


def print_status(status: dict[str, Any], console) -> None:
    from rich.table import Table

    s = status
    table = Table(title=f"{s['job'] or 'job'} output {s['out']}", show_header=False, title_justify="left")
    table.add_row("shards", f"{s['shards']}  ({s['bytes'] / 1e6:.1f} MB)")
    if s["rows"] is not None:
        table.add_row("rows", f"{s['rows']}  (kept {s['kept']}, rejected {s['rejected']}"
                              + (f", NOT YET DONE {s['unaccounted']}" if s["unaccounted"] else "") + ")")
    else:
        table.add_row("rows", "no report yet: the first run has not finished")
    if s["by_task"]:
        table.add_row("by task", ", ".join(f"{k} {v}" for k, v in s["by_task"].items()))
    for reason, n in s["rejects_by_reason"].items():
        table.add_row("rejected", f"{n:>5}  {reason}")
    if s["units_planned"] is not None:
        line = f"{s['units_done']} of {s['units_planned']} units done"
        if s["units_since_report"]:
            line += f" ({s['units_since_report']} since the last report: a run is going on or was stopped)"
        table.add_row("progress", line)
    for unit, why in s["damaged_units"].items():
        table.add_row("DAMAGED", f"unit {unit}: {why}")
    if s["units_planned"] is not None and not s["damaged_units"]:
        table.add_row("shards ok", "checksums verified" if s["verified_checksums"] else "sizes match the ledger "
                      "(--verify also reads the checksums)")
    last = s["last_run"]
    if last:
        table.add_row("last run", f"{last.get('finished_at')}: {last.get('rows_processed', 0)} rows, "
                                  f"{last.get('units_written', 0)} shards in {last.get('wall_s', 0):.1f}s"
                                  + (f" ({last['rows_per_s']} rows/s)" if last.get("rows_processed") else "")
                                  + (f" on {last['where']}" if last.get("where") else ""))
        table.add_row("runs", f"{s['runs']} finished")
    console.print(table)
