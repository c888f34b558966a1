"""Schedules and submission ids without a cluster: the job server is a fake that keeps jobs in a dict and the
clock is a value the test moves. Real submissions to a real head are in test_cluster.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from pipeline.cli.app import app as cli
from pipeline.cli.run import check_job_args
from pipeline.cluster.schedule import ScheduleError, ScheduleStore, due_times, run_scheduler, tick
from pipeline.cluster.submit import auth_headers, entrypoint, submission_id, submit

ARGS = ["--manifest", "/data/m.parquet", "--data-root", "/data", "--out", "/shards/m"]
T0 = datetime(2030, 3, 1, 1, 30, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[2]

runner = CliRunner()


class FakeJobServer:
    """What the scheduler uses of ray.job_submission.JobSubmissionClient, with Ray's errors."""

    def __init__(self, down: bool = False):
        self.jobs: dict[str, SimpleNamespace] = {}
        self.submit_calls = 0
        self.down = down

    def get_job_info(self, sid):
        if self.down:
            raise ConnectionError("Failed to connect to Ray at address: http://127.0.0.1:1")
        if sid not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {sid} does not exist.")
        return self.jobs[sid]

    def submit_job(self, *, entrypoint, submission_id, runtime_env, metadata):
        self.submit_calls += 1
        if self.down:
            raise ConnectionError("Failed to connect to Ray at address: http://127.0.0.1:1")
        if submission_id in self.jobs:
            raise RuntimeError(f"Request failed with status code 400: Job with submission_id {submission_id} "
                               f"already exists. Please use a different submission_id.")
        self.jobs[submission_id] = SimpleNamespace(status="PENDING", entrypoint=entrypoint, metadata=metadata,
                                                   runtime_env=runtime_env)
        return submission_id

    def finish(self, sid, status="SUCCEEDED"):
        self.jobs[sid].status = status


@dataclass
class Clock:
    t: datetime

    def __call__(self) -> datetime:
        return self.t


@pytest.fixture
def store(tmp_path):
    return ScheduleStore(tmp_path / "schedules.json")


# -- submission ids and what is sent -----------------------------------------------------------------------------

def test_submission_id_is_a_function_of_job_args_day_and_tag():
    day = date(2030, 3, 1)
    sid = submission_id("extract", ARGS, day=day)
    assert sid == submission_id("extract", list(ARGS), day=day)
    assert sid.startswith("vssflow-extract-20300301-")
    others = {submission_id("extract", ARGS, day=day + timedelta(days=1)),
              submission_id("extract", ARGS + ["--shard-size", "8"], day=day),
              submission_id("extract", ARGS, day=day, tag="again"),
              submission_id("extract", list(reversed(ARGS)), day=day)}
    assert sid not in others and len(others) == 4


def test_submit_sends_the_cli_entrypoint_with_the_project_and_refuses_bad_args():
    server = FakeJobServer()
    sub = submit(server, "extract", ARGS + ["--visual-model", "/models/clip dir"], now=Clock(T0))
    job = server.jobs[sub.submission_id]
    assert job.entrypoint == entrypoint("extract", ARGS + ["--visual-model", "/models/clip dir"])
    assert job.entrypoint.startswith("python -m pipeline.cli run extract ") and "'/models/clip dir'" in job.entrypoint
    assert Path(job.runtime_env["working_dir"]) == REPO and "/.venv/" in job.runtime_env["excludes"]
    assert job.runtime_env["env_vars"]["HF_HUB_OFFLINE"] == "1"
    later = Clock(T0 + timedelta(hours=20))
    again = submit(server, "extract", ARGS + ["--visual-model", "/models/clip dir"], now=later)
    assert (again.submission_id, again.created, server.submit_calls) == (sub.submission_id, False, 1)
    with pytest.raises(ValueError, match="unknown job 'extrakt'"):
        submit(server, "extrakt", ARGS, now=Clock(T0), check=check_job_args)
    with pytest.raises(ValueError, match="--manifest"):
        submit(server, "extract", ["--out", "/x"], now=Clock(T0), check=check_job_args)
    with pytest.raises(ValueError, match="--shard-sise"):
        submit(server, "extract", ARGS + ["--shard-sise", "3"], now=Clock(T0), check=check_job_args)
    assert server.submit_calls == 1


def test_auth_token_is_sent_unless_auth_is_disabled(tmp_path, monkeypatch):
    token = tmp_path / "auth_token"
    token.write_text("s3cret\n")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    assert auth_headers() == {"Authorization": "Bearer s3cret"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "fromenv")
    assert auth_headers() == {"Authorization": "Bearer fromenv"}
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert auth_headers() == {}
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    assert auth_headers() == {}


# -- the store -----------------------------------------------------------------------------------------------------

def test_store_add_list_remove_and_its_refusals(store):
    store.add("nightly", "0  2 * * *", "extract", ARGS, now=Clock(T0))
    (entry,) = store.list()
    assert (entry["cron"], entry["tz"], entry["args"], entry["firings"]) == ("0 2 * * *", "UTC", ARGS, [])
    assert json.loads(store.path.read_text())["schema_version"] == 1
    with pytest.raises(ScheduleError, match="exists"):
        store.add("nightly", "0 3 * * *", "extract", ARGS)
    store.add("nightly", "0 3 * * *", "extract", ARGS, replace=True)
    assert store.list()[0]["cron"] == "0 3 * * *"
    for bad in [("bad name", "0 2 * * *", "extract", ARGS), ("n", "0 25 * * *", "extract", ARGS),
                ("n", "0 2 * *", "extract", ARGS), ("n", "0 2 * * *", "extrakt", ARGS),
                ("n", "0 2 * * *", "extract", ["--out", "x"])]:
        with pytest.raises(ScheduleError):
            store.add(*bad, check=check_job_args)
    with pytest.raises(ScheduleError, match="time zone"):
        store.add("n", "0 2 * * *", "extract", ARGS, tz="Mars/Olympus")
    store.remove("nightly")
    assert store.list() == []
    with pytest.raises(ScheduleError, match="no schedule named"):
        store.remove("nightly")


def test_due_times_in_a_time_zone_and_after_downtime():
    after = datetime(2030, 3, 1, 0, 0, tzinfo=timezone.utc)
    assert due_times("0 2 * * *", "UTC", after, after + timedelta(hours=1, minutes=59)) == (None, 0)
    due, n = due_times("0 2 * * *", "UTC", after, after + timedelta(hours=2))
    assert (due, n) == (after + timedelta(hours=2), 1)
    due, n = due_times("0 2 * * *", "Europe/Paris", after, after + timedelta(days=1))  # 02:00 Paris = 01:00 UTC
    assert (due, n) == (datetime(2030, 3, 1, 1, 0, tzinfo=timezone.utc), 1)
    due, n = due_times("*/15 * * * *", "UTC", after, after + timedelta(hours=5, minutes=7))
    assert (due, n) == (after + timedelta(hours=5), 20)


# -- firing ---------------------------------------------------------------------------------------------------------

def test_fires_once_per_cron_time_and_records_the_firing(store):
    server, clock = FakeJobServer(), Clock(T0)
    store.add("nightly", "0 2 * * *", "extract", ARGS, now=clock)
    clock.t = T0 + timedelta(minutes=29)                               # 01:59
    assert tick(store, server, clock()) == []
    clock.t = T0 + timedelta(minutes=30, seconds=20)                   # 02:00:20
    (firing,) = tick(store, server, clock())
    assert (firing["schedule"], firing["due"], firing["status"], firing["missed"]) == \
        ("nightly", "2030-03-01T02:00:00+00:00", "PENDING", 0)
    assert firing["submission_id"] in server.jobs and server.submit_calls == 1
    clock.t += timedelta(seconds=30)
    assert tick(store, server, clock()) == [] and server.submit_calls == 1
    (entry,) = store.list()
    assert entry["last_due"] == firing["due"]
    assert [f["submission_id"] for f in entry["firings"]] == [firing["submission_id"]]
    assert entry["firings"][0]["fired_at"] == "2030-03-01T02:00:20+00:00"


def test_a_firing_is_skipped_while_the_previous_run_is_still_running(store):
    server, clock = FakeJobServer(), Clock(T0)
    store.add("nightly", "0 2 * * *", "extract", ARGS, now=clock)
    clock.t = T0 + timedelta(hours=1)
    (first,) = tick(store, server, clock())
    server.finish(first["submission_id"], "RUNNING")                  # a slow run: still going a day later
    clock.t += timedelta(days=1)
    (skipped,) = tick(store, server, clock())
    assert skipped["status"] == "SKIPPED" and skipped["submission_id"] is None
    assert first["submission_id"] in skipped["detail"] and "RUNNING" in skipped["detail"]
    assert server.submit_calls == 1
    clock.t += timedelta(hours=1)                                      # the skipped time is not fired later
    assert tick(store, server, clock()) == []
    server.finish(first["submission_id"], "FAILED")
    clock.t += timedelta(days=1)
    (third,) = tick(store, server, clock())
    assert third["status"] == "PENDING" and third["due"] == "2030-03-03T02:00:00+00:00"
    statuses = [(f["due"][:10], f["status"]) for f in store.list()[0]["firings"]]
    assert statuses == [("2030-03-01", "FAILED"), ("2030-03-02", "SKIPPED"), ("2030-03-03", "PENDING")]


def test_downtime_gives_one_catch_up_firing(store):
    server, clock = FakeJobServer(), Clock(T0)
    store.add("hourly", "0 * * * *", "extract", ARGS, now=clock)
    clock.t = datetime(2030, 3, 1, 2, 0, 5, tzinfo=timezone.utc)
    (first,) = tick(store, server, clock())
    server.finish(first["submission_id"])
    clock.t = datetime(2030, 3, 1, 7, 31, tzinfo=timezone.utc)       # down from 02:00 to 07:31
    (catch_up,) = tick(store, server, clock())
    assert (catch_up["due"], catch_up["missed"], catch_up["status"]) == ("2030-03-01T07:00:00+00:00", 4, "PENDING")
    assert server.submit_calls == 2
    clock.t += timedelta(minutes=1)
    assert tick(store, server, clock()) == []


def test_a_firing_submitted_before_a_crash_is_found_not_doubled(store, tmp_path):
    """The submission id holds the firing time: a scheduler that lost its store finds the job it submitted."""
    server, clock = FakeJobServer(), Clock(T0)
    store.add("nightly", "0 2 * * *", "extract", ARGS, now=clock)
    before = store.path.read_text()
    clock.t = T0 + timedelta(hours=1)
    (first,) = tick(store, server, clock())
    store.path.write_text(before)                                      # the store's write was lost
    (again,) = tick(store, server, clock())
    assert again["submission_id"] == first["submission_id"] and server.submit_calls == 1
    assert again["detail"] == "already submitted for this firing"


def test_cluster_down_records_the_error_and_the_next_pass_fires(store):
    server, clock = FakeJobServer(down=True), Clock(T0)
    store.add("nightly", "0 2 * * *", "extract", ARGS, now=clock)
    clock.t = T0 + timedelta(hours=1)
    (failed,) = tick(store, server, clock())
    assert failed["status"] == "ERROR" and "Failed to connect" in failed["detail"]
    (entry,) = store.list()
    assert entry["last_due"] is None and entry["firings"] == [] and "Failed to connect" in entry["last_error"]["error"]
    server.down = False
    clock.t += timedelta(minutes=1)
    (fired,) = tick(store, server, clock())
    assert fired["status"] == "PENDING" and fired["due"] == "2030-03-01T02:00:00+00:00"
    assert "last_error" not in store.list()[0]


def test_scheduler_loop_polls_reconnects_and_fires(store):
    server, clock = FakeJobServer(), Clock(T0)
    store.add("nightly", "0 2 * * *", "extract", ARGS, now=clock)
    connects, errors, fired, sleeps = [], [], [], []

    def connect():
        connects.append(clock())
        if len(connects) == 1:
            raise ConnectionError("head not up yet")
        return server

    class Stop(Exception):
        pass

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 4:
            raise Stop
        clock.t += timedelta(seconds=seconds)

    with pytest.raises(Stop):
        run_scheduler(store, connect, poll_s=20 * 60, now=clock, sleep=sleep, report=fired.append,
                      on_error=errors.append)
    assert len(errors) == 1 and len(connects) == 2                   # connected again after the failure, then kept
    assert [(f["schedule"], f["due"][11:16]) for f in fired] == [("nightly", "02:00")] and server.submit_calls == 1


def test_scheduler_once_on_an_unreachable_cluster_fails(store):
    def connect():
        raise ConnectionError("Failed to connect to Ray at address: http://127.0.0.1:1")

    with pytest.raises(ConnectionError):
        run_scheduler(store, connect, once=True)


# -- the commands -----------------------------------------------------------------------------------------------------

def test_schedule_commands(store):
    s = ["--store", str(store.path)]
    result = runner.invoke(cli, ["schedule", "add", "nightly", "--cron", "0 2 * * *", *s, "--", "extract", *ARGS])
    assert result.exit_code == 0, result.output
    assert "first firing" in result.output and store.list()[0]["args"] == ARGS
    result = runner.invoke(cli, ["schedule", "add", "hourly", "--cron", "0 * * * *", *s, "extract", *ARGS])
    assert result.exit_code == 0, result.output                       # without "--" the job's options pass too
    result = runner.invoke(cli, ["schedule", "add", "typo", "--cron", "0 2 * * *", *s, "--", "extract", "--ot", "x"])
    assert result.exit_code == 2 and "--ot" in result.output  # a usage error
    result = runner.invoke(cli, ["schedule", "list", *s])
    assert result.exit_code == 0 and "nightly" in result.output and "hourly" in result.output
    result = runner.invoke(cli, ["schedule", "remove", "hourly", *s])
    assert result.exit_code == 0 and [e["name"] for e in store.list()] == ["nightly"]
    created = datetime.fromisoformat(store.list()[0]["created_at"])
    (firing,) = tick(store, FakeJobServer(), created + timedelta(days=1))
    result = runner.invoke(cli, ["schedule", "list", *s])
    assert result.exit_code == 0 and f"PENDING {firing['submission_id']}" in result.stdout
    result = runner.invoke(cli, ["scheduler", "--once", "--address", "http://127.0.0.1:1", *s])
    assert result.exit_code == 1 and "127.0.0.1:1" in result.output


def test_submit_command_checks_the_job_before_reaching_the_cluster():
    result = runner.invoke(cli, ["submit", "extract", "--out", "x", "--address", "http://127.0.0.1:1"])
    assert result.exit_code == 2 and "--manifest" in result.output  # a usage error
    result = runner.invoke(cli, ["submit", "extract", *ARGS, "--address", "http://127.0.0.1:1"])
    assert result.exit_code == 1 and "cannot reach the Ray job server" in result.output
    result = runner.invoke(cli, ["submit", "extract", *ARGS], env={"RAY_API_SERVER_ADDRESS": ""})
    assert result.exit_code == 1 and "--address" in result.output


@pytest.mark.parametrize("command", [["submit"], ["jobs", "status"], ["jobs", "logs"], ["jobs", "stop"],
                                     ["jobs", "list"], ["schedule", "add"], ["schedule", "list"],
                                     ["schedule", "remove"], ["scheduler"], ["status"]])
def test_every_cluster_command_has_help_with_examples(command):
    result = runner.invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output


def test_schedule_add_waits_while_a_scheduler_holds_the_store_and_loses_nothing(store):
    """`schedule add` while a scheduler's pass holds the store's lock: it waits, then both changes are kept."""
    import threading
    import time

    store.add("nightly", "0 2 * * *", "extract", ARGS, now=Clock(T0))
    holding, release = threading.Event(), threading.Event()

    def scheduler_pass() -> None:
        with store.transaction() as data:            # what tick() does: read, change, write, under the lock
            holding.set()
            release.wait(10)
            data["schedules"]["nightly"]["last_due"] = "2030-03-02T02:00:00+00:00"

    thread = threading.Thread(target=scheduler_pass)
    thread.start()
    assert holding.wait(10)
    results: list = []
    adder = threading.Thread(target=lambda: results.append(runner.invoke(
        cli, ["schedule", "add", "hourly", "--cron", "0 * * * *", "--store", str(store.path), "--", "extract",
              *ARGS])))
    adder.start()
    time.sleep(0.5)
    assert adder.is_alive() and not results          # blocked on the lock, not failed
    release.set()
    thread.join(10)
    adder.join(30)
    assert results and results[0].exit_code == 0, results and results[0].output
    entries = {e["name"]: e for e in store.list()}
    assert set(entries) == {"nightly", "hourly"} and entries["nightly"]["last_due"] == "2030-03-02T02:00:00+00:00"
