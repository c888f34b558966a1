"""Schedules: run a `pipeline run JOB ...` on a cron schedule, as Ray jobs on a cluster.

A schedule is a name, a cron expression (evaluated in its time zone, UTC by default) and a job with its
arguments, kept in a JSON store (default ~/.vssflow/schedules.json). `pipeline scheduler` wakes up every
`poll_s` seconds and, for each schedule whose next firing time has passed:

- skips the firing (and records it as SKIPPED) while the schedule's previous run is still PENDING or RUNNING,
  so a slow run is never doubled;
- otherwise submits the job once (pipeline/submit.py) with the firing time as the submission tag, so a
  scheduler that crashes after submitting finds the same job again instead of submitting a second one;
- after downtime, fires once for the latest missed time however many were missed (the count is recorded).

Extract runs are incremental (pipeline/ledger.py), so a scheduled extract over a growing manifest only does the
new rows. Every firing is recorded in the store with its time, submission id and status.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from manifests.atomic import atomic_write_text
from pipeline.cluster.submit import JobCheck, job_status, submit, utc_now
from pipeline.errors import PipelineError, ScheduleError

SCHEMA_VERSION = 1
DEFAULT_STORE = Path("~/.vssflow/schedules.json")
HISTORY = 200            # firings kept per schedule
MISSED_COUNT_CAP = 10_000  # missed firings counted after downtime (a minutely cron over a week is 10,080)
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RUNNING = frozenset({"PENDING", "RUNNING"})


def parse_cron(cron: str) -> str:
    from croniter import croniter

    cron = " ".join(cron.split())
    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ScheduleError(f"not a 5-field cron expression (minute hour day month weekday): {cron!r}")
    return cron


def parse_tz(name: str):
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}; use an IANA name such as UTC or Europe/Paris") from None


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat(timespec="seconds")


def from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def due_times(cron: str, tz: str, after: datetime, now: datetime) -> tuple[Optional[datetime], int]:
    """(latest firing time in (after, now], how many there were); (None, 0) when none is due."""
    from croniter import croniter

    zone = parse_tz(tz)
    it = croniter(cron, after.astimezone(zone))
    first = it.get_next(datetime)
    if first > now:
        return None, 0
    count = 1
    while count < MISSED_COUNT_CAP and it.get_next(datetime) <= now:
        count += 1
    latest = croniter(cron, (now + timedelta(seconds=1)).astimezone(zone)).get_prev(datetime)
    return latest.astimezone(timezone.utc), count


def next_time(cron: str, tz: str, after: datetime) -> datetime:
    from croniter import croniter

    return croniter(cron, after.astimezone(parse_tz(tz))).get_next(datetime).astimezone(timezone.utc)


class ScheduleStore:
    """The schedules and their firing history in one JSON file; every change is locked, read, changed, written."""

    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path or DEFAULT_STORE).expanduser()

    def _empty(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "schedules": {}}

    def read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return self._empty()
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ScheduleError(f"{self.path} is not a readable schedule store ({e}); restore it from a backup or "
                                "move it away (`pipeline schedule add` starts a new one)") from None
        if not isinstance(data, dict) or not isinstance(data.get("schedules"), dict):
            raise ScheduleError(f"{self.path} is not a schedule store (no 'schedules' mapping); move it away")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ScheduleError(f"{self.path}: schema_version {data.get('schema_version')!r}, "
                                f"this version reads {SCHEMA_VERSION}")
        return data

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Exclusive access across processes (`schedule add` while a scheduler runs); written back on success."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.read()
            yield data
            atomic_write_text(self.path, json.dumps(data, indent=2, sort_keys=True) + "\n")

    def add(self, name: str, cron: str, job: str, args: Sequence[str], *, tz: str = "UTC",
            now: Callable[[], datetime] = utc_now, replace: bool = False,
            check: Optional[JobCheck] = None) -> dict[str, Any]:
        """Store a schedule; its first firing is the first cron time after now. `check` parses the job's args."""
        if not NAME.match(name):
            raise ScheduleError(f"schedule names use letters, digits, '_' and '-' (at most 64): {name!r}")
        cron = parse_cron(cron)
        parse_tz(tz)
        if check is not None:
            try:
                check(job, args)
            except PipelineError as e:
                raise ScheduleError(str(e)) from None
        with self.transaction() as data:
            if name in data["schedules"] and not replace:
                raise ScheduleError(f"a schedule named {name!r} exists; remove it first or pass --replace")
            entry = {"name": name, "cron": cron, "tz": tz, "job": job, "args": list(args),
                     "created_at": iso(now()), "last_due": None, "firings": []}
            data["schedules"][name] = entry
        return entry

    def remove(self, name: str) -> None:
        with self.transaction() as data:
            if data["schedules"].pop(name, None) is None:
                raise ScheduleError(f"no schedule named {name!r} in {self.path}")

    def list(self) -> list[dict[str, Any]]:
        schedules = self.read()["schedules"]
        return [schedules[name] for name in sorted(schedules)]


def _record(entry: dict[str, Any], firing: dict[str, Any]) -> None:
    entry["firings"] = (entry["firings"] + [firing])[-HISTORY:]


def _refresh_last_run(entry: dict[str, Any], client) -> Optional[dict[str, Any]]:
    """The schedule's latest submitted run, its status updated from the cluster (None: no run yet)."""
    for firing in reversed(entry["firings"]):
        if firing.get("submission_id"):
            if firing["status"] in RUNNING:
                firing["status"] = job_status(client, firing["submission_id"]) or "UNKNOWN"
            return firing
    return None


def fire_due(entry: dict[str, Any], client, now: datetime, *,
             check: Optional[JobCheck] = None) -> Optional[dict[str, Any]]:
    """Fire one schedule if a firing time has passed; returns the firing recorded (None: nothing due)."""
    last_run = _refresh_last_run(entry, client)
    after = from_iso(entry["last_due"] or entry["created_at"])
    due, count = due_times(entry["cron"], entry["tz"], after, now)
    if due is None:
        return None
    firing: dict[str, Any] = {"due": iso(due), "fired_at": iso(now), "missed": count - 1}
    if last_run is not None and last_run["status"] in RUNNING:
        firing.update(status="SKIPPED", submission_id=None,
                      detail=f"previous run {last_run['submission_id']} still {last_run['status']}")
    else:
        tag = f"schedule:{entry['name']}@{iso(due)}"
        try:
            sub = submit(client, entry["job"], entry["args"], now=lambda: now, tag=tag, check=check)
        except Exception as e:  # the cluster is down or refused: no firing is recorded, the next tick retries
            entry["last_error"] = {"at": iso(now), "due": iso(due), "error": f"{type(e).__name__}: {e}"}
            return {**firing, "status": "ERROR", "submission_id": None, "detail": entry["last_error"]["error"]}
        firing.update(status=sub.status, submission_id=sub.submission_id,
                      detail=None if sub.created else "already submitted for this firing")
    entry["last_due"] = iso(due)
    entry.pop("last_error", None)
    _record(entry, firing)
    return firing


def tick(store: ScheduleStore, client, now: datetime, *, check: Optional[JobCheck] = None) -> list[dict[str, Any]]:
    """One pass over every schedule; returns the firings made (SUBMITTED/SKIPPED/ERROR), each with its name."""
    fired = []
    with store.transaction() as data:
        for name in sorted(data["schedules"]):
            firing = fire_due(data["schedules"][name], client, now, check=check)
            if firing is not None:
                fired.append({"schedule": name, **firing})
    return fired


def run_scheduler(store: ScheduleStore, connect: Callable[[], Any], *, once: bool = False, poll_s: float = 30.0,
                  now: Callable[[], datetime] = utc_now, sleep: Callable[[float], None] = time.sleep,
                  report: Callable[[dict[str, Any]], None] = lambda firing: None,
                  on_error: Callable[[Exception], None] = lambda e: None, check: Optional[JobCheck] = None) -> None:
    """Tick every `poll_s` seconds (once with `once`). `connect()` makes the job client, again after a failure."""
    client = None
    while True:
        try:
            client = client or connect()
            for firing in tick(store, client, now(), check=check):
                report(firing)
                if firing["status"] == "ERROR":
                    client = None  # reconnect next time: the head may have restarted
        except ScheduleError:
            raise
        except Exception as e:  # the head is unreachable: say so and try again next tick
            client = None
            on_error(e)
            if once:
                raise
        if once:
            return
        sleep(poll_s)
