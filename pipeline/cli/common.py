"""What every command shares: one console (stderr), one way to fail, progress for long work, a job's summary.

A command fails with `fail(message)` or by raising a `PipelineError` inside `reported_errors()`: either way the
person sees `error: MESSAGE` (what is wrong and what to do) and the process exits with the error's code, 2 for a
usage error and 1 for a runtime failure. No traceback for an error we expected.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from manifests.errors import PipelineError

console = Console(stderr=True)           # messages, progress, summaries
stdout = Console(soft_wrap=True)         # what a command prints as its result (tables a script may read)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `error: MESSAGE` and exit with `code` (2: usage error, 1: runtime failure)."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # one line in logs
    raise typer.Exit(code)


@contextmanager
def reported_errors(*also: type[BaseException]) -> Iterator[None]:
    """Turn a PipelineError (or one of the `also` types, reported with exit code 1) raised inside into a message."""
    try:
        yield
    except PipelineError as e:
        fail(str(e), e.exit_code)
    except also as e:
        fail(str(e))


@contextmanager
def row_progress(description: str) -> Iterator[Any]:
    """Yields a callback for job progress events ({"rows_done", "units_written", ...})."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
               TextColumn("{task.fields[shards]} shards"), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=None, shards=0, rate="")

        def update(event: dict[str, Any]) -> None:
            elapsed = progress.tasks[task].elapsed or 0
            rate = f"{event['rows_done'] / elapsed:.2f} rows/s" if elapsed else ""
            progress.update(task, total=event["rows_todo"], completed=event["rows_done"], shards=event["units_written"], rate=rate)

        yield update


def print_summary(report: dict[str, Any]) -> None:
    counts, run = report["counts"], report["this_run"]
    table = Table(title=f"{report['job']} -> {report['out']}", show_header=False, title_justify="left")
    table.add_row("rows", f"{counts['rows']}  (kept {counts['kept']}, rejected {counts['rejected']}"
                          + (f", NOT YET DONE {counts['unaccounted']}" if counts["unaccounted"] else "") + ")")
    table.add_row("shards", f"{counts['shards']}  ({counts['bytes'] / 1e6:.1f} MB, {counts['clip_seconds']:.1f} clip-s)")
    if counts.get("by_task"):
        table.add_row("by task", ", ".join(f"{k} {v}" for k, v in counts["by_task"].items()))
    for reason, n in counts.get("rejects_by_reason", {}).items():
        table.add_row("rejected", f"{n:>5}  {reason}")
    table.add_row("this run", f"{run.get('rows_processed', 0)} rows in {run['wall_s']:.1f}s"
                              + (f" ({run['rows_per_s']} rows/s, {run['clip_seconds_per_s']} clip-s/s)"
                                 if run.get("rows_processed") else " (nothing left to do)"))
    for unit, why in (run.get("units_damaged") or {}).items():
        table.add_row("redone", f"unit {unit}: {why}")
    if run.get("rows_changed"):
        kept = run.get("units_changed_kept") or []
        table.add_row("edited rows", f"{run['rows_changed']} input row(s) changed since their shard was made"
                      + (f"; {len(kept)} unit(s) kept as they were: run again with --redo-changed to redo them"
                         if kept else " (redone)") + f"; e.g. {', '.join(run['rows_changed_listed'][:5])}")
    console.print(table)
    console.print(f"report: {report['out']}/report.json   rejects: {report['out']}/rejects.parquet")
