"""What every command shares: one console (stderr), one way to fail, progress for long work, a job's summary.

A command fails with `fail(message)` or by raising a `PipelineError` inside `reported_errors()`: either way the
person sees `error: MESSAGE` (what is wrong and what to do) and the process exits with the error's code, 2 for a
usage error and 1 for a runtime failure. No traceback for an error we expected.
"""

from __future__ import annotations

import logging
import sys
import time
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


LOG_LEVELS = ("debug", "info", "warning", "error")
PROGRESS_EVERY_S = 30.0


def set_log_level(level: str) -> None:
    """Log lines (time, level, where) on stderr: the job log a cluster user reads."""
    if level.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{level!r} is not one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    logging.basicConfig(level=level.upper(), stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


@contextmanager
def job_progress(description: str, every_s: float = PROGRESS_EVERY_S) -> Iterator[Any]:
    """A progress bar on a terminal; plain lines (`progress_line`) at most every `every_s` seconds otherwise
    (Ray job logs, CI), and after the last unit."""
    if sys.stdout.isatty():
        with row_progress(description) as update:
            yield update
        return
    started = time.monotonic()
    last = [-every_s]

    def update(event: dict[str, Any]) -> None:
        now = time.monotonic() - started
        if now - last[0] >= every_s or event["rows_done"] >= event["rows_todo"]:
            last[0] = now
            print(progress_line(description, event, now), file=sys.stderr, flush=True)

    yield update


def progress_line(description: str, event: dict[str, Any], elapsed_s: float) -> str:
    """`extract: 120/400 rows (30%), 3 shards, 12.3 rows/s, eta 23s, 5 rejected so far`."""
    done, todo = event["rows_done"], event["rows_todo"]
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    eta = f"{(todo - done) / rate:.0f}s" if rate > 0 else "?"
    return (f"{description}: {done}/{todo} rows ({done / max(todo, 1):.0%}), {event['units_written']} shards, "
            f"{rate:.1f} rows/s, eta {eta}, {event.get('rejected', 0)} rejected so far")


def print_plan(plan: dict[str, Any]) -> None:
    """A dry run's plan, one fact a line (what would be done; nothing was written)."""
    table = Table(title=f"{plan['job']} -> {plan['out']} (dry run: nothing written)", show_header=False,
                  title_justify="left")
    table.add_row("rows", f"{plan['rows']} in the input, {plan['rows_planned_new']} not planned yet")
    table.add_row("units", f"{plan['units_todo']} to do ({plan['rows_todo']} rows, shard_size {plan['shard_size']}); "
                           f"{plan['units_done']} done, {plan['units_planned_new']} new")
    if plan.get("units_todo_by_task"):
        table.add_row("by task", ", ".join(f"{k} {v} units" for k, v in sorted(plan["units_todo_by_task"].items())))
    table.add_row("estimated", f"{plan['estimated_bytes'] / 1e6:.1f} MB of shards (upper bound)")
    table.add_row("placement", ", ".join(f"{k} {v}" for k, v in plan["placement"].items()) + f" on {plan['where']}")
    console.print(table)


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
    if run.get("driver_bytes_per_row") is not None:
        table.add_row("driver", f"{run['driver_cpu_s']:.1f} CPU-s, {run['driver_bytes_per_row']:.0f} bytes a row "
                                "received (workers write the shards)")
    console.print(table)
    console.print(f"report: {report['out']}/report.json   rejects: {report['out']}/rejects.parquet")
