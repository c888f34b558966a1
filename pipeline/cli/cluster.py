"""Cluster commands of `pipeline`: submit jobs, follow them, schedule them, and look at an output folder.

`submit`, `jobs`, `schedule`, `scheduler`, `status` (registered in pipeline/cli/app.py). `submit` and `schedule add`
need PASS_THROUGH as their context settings so the job's own options reach the job; a job's arguments are checked
with `pipeline.cli.run.check_job_args` before anything is sent or stored.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import typer

from manifests.errors import PipelineError
from pipeline.cli.common import console, fail, reported_errors
from pipeline.cli.run import check_job_args

# Options the command does not know (the job's: --manifest, --out, ...) are passed on to the job.
PASS_THROUGH = {"ignore_unknown_options": True}
ADDRESS_HELP = "Ray dashboard address of the cluster, e.g. http://HEAD:8265 (or RAY_API_SERVER_ADDRESS)."
ADDRESS_ENV = "RAY_API_SERVER_ADDRESS"
STORE_HELP = "Schedule store (JSON); default ~/.vssflow/schedules.json."

jobs_app = typer.Typer(help="Follow jobs submitted to a cluster: status, logs, stop, list.", no_args_is_help=True)
schedule_app = typer.Typer(help="Run jobs on a cron schedule (fired by `pipeline scheduler`).", no_args_is_help=True)


def _client(address: Optional[str]):
    from pipeline.cluster.submit import job_client

    if not address:
        fail(f"no cluster address: pass --address http://HEAD:8265 or set {ADDRESS_ENV}")
    try:
        return job_client(address)
    except (ConnectionError, RuntimeError, ValueError) as e:
        fail(f"cannot reach the Ray job server at {address}: {e}")


def _time(ms: Optional[int]) -> str:
    return "-" if not ms else datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds")


SUBMIT_EPILOG = """Examples:

  pipeline submit extract --manifest /mnt/data/m.parquet --data-root /mnt/data --out /mnt/shards/m \
--visual-model /mnt/models/clip-vit-base-patch16 --address http://head:8265

  pipeline submit extract --manifest ... --out ... --address http://head:8265 --wait     # exit code = job outcome

  pipeline submit extract ... --tag rerun-after-fix     # a new run of a job already submitted today

The same job with the same arguments is submitted once per UTC day: a second submission prints the first one's id.
Paths are read on the cluster: use storage every node sees."""


def submit_cmd(
    job: str = typer.Argument(..., help="A job of `pipeline run` (extract, ...)."),
    args: Optional[list[str]] = typer.Argument(None, help="The job's arguments, as for `pipeline run JOB`."),
    address: Optional[str] = typer.Option(None, envvar=ADDRESS_ENV, help=ADDRESS_HELP),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job to end; exit 1 unless it SUCCEEDED."),
    timeout_s: float = typer.Option(24 * 3600, help="With --wait: give up waiting after this many seconds."),
    tag: Optional[str] = typer.Option(None, help="Part of the submission id: a deliberate new run the same day."),
) -> None:
    """Run `pipeline run JOB ARGS` on a Ray cluster as a Ray job; prints the submission id."""
    from pipeline.cluster.submit import submit, wait_for

    args = list(args or [])
    with reported_errors():
        check_job_args(job, args)
    client = _client(address)
    try:
        sub = submit(client, job, args, tag=tag)
    except RuntimeError as e:
        fail(f"the cluster refused the job: {e}")
    if sub.created:
        console.print(f"submitted {sub.submission_id}  (logs: pipeline jobs logs {sub.submission_id} --follow)")
    else:
        console.print(f"already submitted today: {sub.submission_id} is {sub.status} (--tag for a new run)")
    typer.echo(sub.submission_id)
    if wait:
        try:
            status = wait_for(client, sub.submission_id, timeout_s=timeout_s, poll_s=5.0)
        except TimeoutError as e:
            fail(f"{e}; it goes on running (pipeline jobs stop {sub.submission_id} stops it)")
        console.print(f"{sub.submission_id}: {status}")
        if status != "SUCCEEDED":
            console.print(client.get_job_logs(sub.submission_id)[-4000:], markup=False, highlight=False,
                          soft_wrap=True)
            raise typer.Exit(1)


@jobs_app.command("status", epilog="Example:\n\n  pipeline jobs status vssflow-extract-20260102-0123abcd4567ef89 "
                                   "--address http://head:8265")
def jobs_status_cmd(
    submission_id: str = typer.Argument(..., help="Submission id printed by `pipeline submit`."),
    address: Optional[str] = typer.Option(None, envvar=ADDRESS_ENV, help=ADDRESS_HELP),
) -> None:
    """A job's status, message, times, entrypoint and metadata."""
    from pipeline.cluster.submit import find_job

    info = find_job(_client(address), submission_id)
    if info is None:
        fail(f"no job {submission_id} on this cluster (`pipeline jobs list` shows them)")
    console.print(f"[bold]{submission_id}[/]: {getattr(info.status, 'value', info.status)}")
    for label, value in (("message", info.message), ("started", _time(info.start_time)),
                         ("ended", _time(info.end_time)), ("entrypoint", info.entrypoint),
                         ("metadata", json.dumps(info.metadata or {}, sort_keys=True))):
        console.print(f"  {label:<10} {value}", markup=False, highlight=False)
    typer.echo(getattr(info.status, "value", info.status))


@jobs_app.command("logs", epilog="Examples:\n\n  pipeline jobs logs ID --address http://head:8265\n\n"
                                 "  pipeline jobs logs ID --address http://head:8265 --follow")
def jobs_logs_cmd(
    submission_id: str = typer.Argument(..., help="Submission id."),
    address: Optional[str] = typer.Option(None, envvar=ADDRESS_ENV, help=ADDRESS_HELP),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines until the job ends."),
) -> None:
    """The job's driver output: progress, the summary table, errors."""
    from pipeline.cluster.submit import find_job

    client = _client(address)
    if find_job(client, submission_id) is None:
        fail(f"no job {submission_id} on this cluster")
    if not follow:
        typer.echo(client.get_job_logs(submission_id), nl=False)
        return

    async def tail() -> None:
        async for lines in client.tail_job_logs(submission_id):
            typer.echo(lines, nl=False)

    asyncio.run(tail())


@jobs_app.command("stop", epilog="Example:\n\n  pipeline jobs stop ID --address http://head:8265")
def jobs_stop_cmd(
    submission_id: str = typer.Argument(..., help="Submission id."),
    address: Optional[str] = typer.Option(None, envvar=ADDRESS_ENV, help=ADDRESS_HELP),
) -> None:
    """Stop a running job. Finished shards stay; submitting again resumes what is missing."""
    from pipeline.cluster.submit import find_job

    client = _client(address)
    if find_job(client, submission_id) is None:
        fail(f"no job {submission_id} on this cluster")
    stopped = client.stop_job(submission_id)
    console.print(f"{submission_id}: {'stop requested' if stopped else 'not running'}")


@jobs_app.command("list", epilog="Examples:\n\n  pipeline jobs list --address http://head:8265\n\n"
                                 "  pipeline jobs list --address http://head:8265 --all")
def jobs_list_cmd(
    address: Optional[str] = typer.Option(None, envvar=ADDRESS_ENV, help=ADDRESS_HELP),
    all_jobs: bool = typer.Option(False, "--all", help="Also jobs not submitted by `pipeline submit`."),
) -> None:
    """Jobs on the cluster, newest first: id, status, start, end (UTC), job and arguments; one line each."""
    from pipeline.cluster.submit import ID_PREFIX

    jobs = [j for j in _client(address).list_jobs()
            if all_jobs or (j.submission_id or "").startswith(f"{ID_PREFIX}-")]
    for j in sorted(jobs, key=lambda j: j.start_time or 0, reverse=True):
        typer.echo(f"{j.submission_id or j.job_id or '-'}  {getattr(j.status, 'value', j.status):<9}  "
                   f"{_time(j.start_time)}  {_time(j.end_time):<25}  {j.entrypoint}")
    if not jobs:
        console.print("no jobs" + ("" if all_jobs else " submitted by `pipeline submit` (--all shows every job)"))


SCHEDULE_ADD_EPILOG = """Examples:

  pipeline schedule add nightly-ljs --cron "0 2 * * *" -- extract --manifest /mnt/data/ljs.parquet \
--data-root /mnt/data --out /mnt/shards/ljs --visual-model /mnt/models/clip

  pipeline schedule add hourly --cron "0 * * * *" --tz Europe/Paris -- extract ...

The job's arguments are checked now. Extract is incremental: each firing only does the manifest's new rows."""


@schedule_app.command("add", context_settings=PASS_THROUGH, epilog=SCHEDULE_ADD_EPILOG)
def schedule_add_cmd(
    name: str = typer.Argument(..., help="Schedule name (letters, digits, _ and -)."),
    job: str = typer.Argument(..., help="A job of `pipeline run`."),
    args: Optional[list[str]] = typer.Argument(None, help="The job's arguments, as for `pipeline run JOB`."),
    cron: str = typer.Option(..., help='5-field cron expression, e.g. "0 2 * * *" (02:00 every day).'),
    tz: str = typer.Option("UTC", help="Time zone the cron expression is read in (IANA name)."),
    store: Optional[Path] = typer.Option(None, help=STORE_HELP),
    replace: bool = typer.Option(False, "--replace", help="Replace a schedule of the same name."),
) -> None:
    """Add a schedule: run `pipeline run JOB ARGS` at every cron time."""
    from pipeline.cluster.schedule import ScheduleStore, next_time

    with reported_errors():
        entry = ScheduleStore(store).add(name, cron, job, list(args or []), tz=tz, replace=replace,
                                         check=check_job_args)
    first = next_time(entry["cron"], entry["tz"], datetime.fromisoformat(entry["created_at"]))
    console.print(f"schedule {name}: {job} at '{entry['cron']}' ({tz}); first firing {first.isoformat()}")


@schedule_app.command("list", epilog="Examples:\n\n  pipeline schedule list\n\n"
                                     "  pipeline schedule list --store ops/schedules.json")
def schedule_list_cmd(store: Optional[Path] = typer.Option(None, help=STORE_HELP)) -> None:
    """Schedules with their next firing and last firing (time, submission id, status)."""
    import shlex

    from pipeline.cluster.schedule import ScheduleStore, from_iso, next_time

    with reported_errors():
        schedules = ScheduleStore(store).list()
    if not schedules:
        console.print("no schedules")
    for s in schedules:
        after = from_iso(s["last_due"] or s["created_at"])
        typer.echo(f"{s['name']}  '{s['cron']}' {s['tz']}  next {next_time(s['cron'], s['tz'], after).isoformat()}")
        typer.echo(f"  job   {shlex.join([s['job'], *s['args']])}")
        if s["firings"]:
            last = s["firings"][-1]
            typer.echo(f"  last  {last['due']} {last['status']} {last.get('submission_id') or ''}"
                       + (f" ({last['detail']})" if last.get("detail") else "")
                       + f"  [{len(s['firings'])} firing(s) recorded]")
        if s.get("last_error"):
            typer.echo(f"  error {s['last_error']['at']}: {s['last_error']['error']} (retried at the next pass)")


@schedule_app.command("remove", epilog="Example:\n\n  pipeline schedule remove nightly-ljs")
def schedule_remove_cmd(
    name: str = typer.Argument(..., help="Schedule name."),
    store: Optional[Path] = typer.Option(None, help=STORE_HELP),
) -> None:
    """Remove a schedule (jobs it submitted keep running)."""
    from pipeline.cluster.schedule import ScheduleStore

    with reported_errors():
        ScheduleStore(store).remove(name)
    console.print(f"removed schedule {name}")


SCHEDULER_EPILOG = """Examples:

  pipeline scheduler --address http://head:8265                 # runs until stopped; a systemd service or tmux

  pipeline scheduler --address http://head:8265 --once          # one pass, e.g. from the system's cron every minute

A firing is skipped while the schedule's previous run is PENDING or RUNNING; after downtime, missed firings
become one run."""


def scheduler_cmd(
    address: Optional[str] = typer.Option(None, envvar=ADDRESS_ENV, help=ADDRESS_HELP),
    store: Optional[Path] = typer.Option(None, help=STORE_HELP),
    once: bool = typer.Option(False, "--once", help="One pass over the schedules, then exit."),
    poll_s: float = typer.Option(30.0, help="Seconds between passes."),
) -> None:
    """Submit scheduled jobs when they are due, recording each firing in the store."""
    from pipeline.cluster.schedule import ScheduleStore, run_scheduler
    from pipeline.cluster.submit import job_client

    if not address:
        fail(f"no cluster address: pass --address http://HEAD:8265 or set {ADDRESS_ENV}")
    schedules = ScheduleStore(store)

    def report(firing: dict) -> None:
        detail = f"  ({firing['detail']})" if firing.get("detail") else ""
        missed = f", {firing['missed']} earlier firing(s) missed" if firing.get("missed") else ""
        console.print(f"{firing['fired_at']} {firing['schedule']} due {firing['due']}{missed}: {firing['status']} "
                      f"{firing.get('submission_id') or ''}{detail}", markup=False, highlight=False)

    def on_error(e: Exception) -> None:
        if not once:
            console.print(f"[yellow]scheduler:[/] cluster at {address} unreachable ({e}); retrying in {poll_s:.0f}s")

    console.print(f"scheduler: {schedules.path}, cluster {address}" + (", one pass" if once else ""))
    try:
        run_scheduler(schedules, lambda: job_client(address), once=once, poll_s=poll_s, report=report,
                      on_error=on_error, check=check_job_args)
    except PipelineError as e:
        fail(str(e), e.exit_code)
    except Exception as e:  # noqa: BLE001 - --once: the pass could not run (the cluster is unreachable)
        fail(f"scheduler pass failed: {e}")


STATUS_EPILOG = """Examples:

  pipeline status /mnt/shards/ljs

  pipeline status /mnt/shards/ljs --json | jq .rejects_by_reason

  pipeline status /mnt/shards/ljs --verify      # re-read every shard's checksum"""


def status_cmd(
    out: str = typer.Argument(..., help="Output folder (or object-storage URL) of a job."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON on stdout."),
    verify: bool = typer.Option(False, "--verify", help="Also re-read every shard's checksum (sizes are always "
                                "compared); exit 1 when a shard is missing or damaged."),
) -> None:
    """Shards, rows, rejects by reason, progress of a running job, damaged shards, and the last runs."""
    from pipeline.status import output_status, print_status

    with reported_errors():
        status = output_status(out, verify=verify)
    if as_json:
        typer.echo(json.dumps(status, indent=2, sort_keys=True, default=str))
    else:
        print_status(status, console)
    if status["damaged_units"]:
        fail(f"{len(status['damaged_units'])} shard(s) missing or damaged; run the job again to redo them")
