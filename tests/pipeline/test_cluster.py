"""Running on a cluster: the launcher config, jobs submitted to a real local Ray head, a scheduler firing real
incremental extracts, a worker killed mid-job, and `pipeline status`.

One Ray head is started for this module (`ray start --head` on 127.0.0.1 with its own ports and temp dir, token
auth off) and torn down after it by killing exactly its own processes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from manifests.schema import write_manifest
from pipeline.cli.app import app as cli
from pipeline.cluster.submit import job_client, job_status, runtime_env, submit, wait_for
from stages.format.shard_io import iter_samples
from tests.conftest import SHARD_SIZE

REPO = Path(__file__).resolve().parents[2]
JOB_TIMEOUT_S = 420

runner = CliRunner()


# -- the cluster launcher config -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster_yaml() -> dict:
    return yaml.safe_load((REPO / "ray_cluster.yaml").read_text())


def test_cluster_yaml_has_what_the_launcher_needs(cluster_yaml):
    c = cluster_yaml
    for key in ("cluster_name", "provider", "auth", "available_node_types", "head_node_type", "setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands", "file_mounts", "max_workers"):
        assert key in c, key
    assert c["provider"]["type"] and c["head_node_type"] in c["available_node_types"]
    workers = {k: v for k, v in c["available_node_types"].items() if k != c["head_node_type"]}
    assert any(v["resources"].get("GPU", 0) >= 1 for v in workers.values()), "needs a GPU worker type"
    assert any(v["resources"].get("CPU", 0) >= 1 and not v["resources"].get("GPU") for v in workers.values())
    for name, node in workers.items():
        assert 0 <= node["min_workers"] <= node["max_workers"] <= c["max_workers"], name
    assert "." in c["file_mounts"].values(), "the project folder must be synced to the nodes"
    project = next(remote for remote, local in c["file_mounts"].items() if local == ".")
    # Installed exactly as the README says: scripts/setup.sh run inside the synced project folder.
    assert any(f"cd {project}" in cmd and "bash scripts/setup.sh" in cmd for cmd in c["setup_commands"])
    start = " ".join(c["head_start_ray_commands"] + c["worker_start_ray_commands"])
    assert f"{project}/.venv/bin/ray start --head" in start and "--address=$RAY_HEAD_IP" in start
    assert not {".venv", ".git"} - set(c["rsync_exclude"])


def test_cluster_yaml_keeps_the_dashboard_on_the_heads_loopback_with_token_auth(cluster_yaml):
    """Issue 15, 3: the dashboard and job server are reached through `ray dashboard` (an SSH tunnel), never on
    every interface, and every node starts Ray with token authentication."""
    starts = [cmd for cmd in cluster_yaml["head_start_ray_commands"] + cluster_yaml["worker_start_ray_commands"]
              if "ray start" in cmd]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in cmd for cmd in starts)
    head = next(cmd for cmd in starts if "--head" in cmd)
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in " ".join(starts)


def test_cluster_yaml_passes_rays_own_schema_and_preparation(cluster_yaml):
    """Ray validates a config with its ray-schema.json (jsonschema) and fills in provider defaults in `ray up`."""
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cluster_yaml, schema)
    prepared = prepare_config(copy.deepcopy(cluster_yaml))
    validate_config(prepared)
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0
    broken = copy.deepcopy(cluster_yaml)
    broken["available_node_types"]["gpu_worker"]["resources"]["GPU"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_job_package_leaves_out_venv_outputs_and_git(tmp_path):
    """What `working_dir` uploads, packed by Ray's own packer with our excludes alone (no .gitignore)."""
    from ray._private.runtime_env.packaging import create_package

    env = runtime_env()
    package = tmp_path / "pkg.zip"
    create_package(env["working_dir"], package, include_gitignore=False, excludes=env["excludes"])
    names = zipfile.ZipFile(package).namelist()
    assert {"pipeline/cli/app.py", "scripts/setup.sh", "pyproject.toml", "ray_cluster.yaml"} <= set(names)
    for prefix in (".venv/", ".git/", "demo/", "bench/out/"):
        assert not any(n.startswith(prefix) for n in names), prefix
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert package.stat().st_size < 20e6


# -- one real Ray head for this module -------------------------------------------------------------------------

@dataclass(frozen=True)
class Head:
    url: str          # dashboard / job server
    temp_dir: Path


def _free_ports(n: int, rng: random.Random, taken: set[int]) -> list[int]:
    """Ports below Linux's ephemeral range (so no client socket takes them meanwhile), free on 127.0.0.1 now."""
    ports: list[int] = []
    while len(ports) < n:
        port = rng.randrange(20000, 32000)
        if port in taken or port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def _worker_port_range(rng: random.Random, taken: set[int], size: int = 100) -> int:
    while True:
        base = rng.randrange(20000, 32000 - size)
        if not taken & set(range(base, base + size)) and len(_free_in(range(base, base + size))) == size:
            return base


def _free_in(ports) -> list[int]:
    free = []
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                free.append(port)
            except OSError:
                pass
    return free


def _head_processes(temp_dir: Path):
    """Every process of the head started in `temp_dir`: those naming it, and all their descendants."""
    import psutil

    roots = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and any(str(temp_dir) in arg for arg in (p.info["cmdline"] or [])):
                roots.append(p)
        except psutil.Error:
            pass
    found = {p.pid: p for p in roots}
    for p in roots:
        try:
            found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.Error:
            pass
    return list(found.values())


def _stop_head(temp_dir: Path) -> None:
    """Not `ray stop`: that stops every Ray on the machine, the tests' embedded session included."""
    import psutil

    procs = _head_processes(temp_dir)
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture(scope="module")
def head():
    rng = random.Random()
    names = ("port", "dashboard-port", "ray-client-server-port", "node-manager-port", "object-manager-port",
             "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port")
    ports = dict(zip(names, _free_ports(len(names), rng, set())))
    workers = _worker_port_range(rng, set(ports.values()))
    temp_dir = Path(tempfile.mkdtemp(prefix="vssray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
           "--num-cpus=2", "--num-gpus=0", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           *(f"--{k}={v}" for k, v in ports.items()), f"--min-worker-port={workers}",
           f"--max-worker-port={workers + 99}", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    try:
        started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr[-3000:]
        yield Head(url=f"http://127.0.0.1:{ports['dashboard-port']}", temp_dir=temp_dir)
    finally:
        _stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def extract_args(corpus, tiny_clip, manifest: Path, out: Path) -> list[str]:
    return ["--manifest", str(manifest), "--data-root", str(corpus.root), "--out", str(out),
            "--visual-model", str(tiny_clip), "--shard-size", str(SHARD_SIZE)]


def wait_ok(client, sid: str) -> None:
    status = wait_for(client, sid, timeout_s=JOB_TIMEOUT_S, poll_s=0.5)
    assert status == "SUCCEEDED", client.get_job_logs(sid)[-4000:]


def placed(out: Path) -> tuple[list, list]:
    """(key, shard) of every sample and (clip_id, stage, reason) of every reject: where each row went."""
    index = pq.read_table(out / "index.parquet", columns=["key", "shard"]).to_pylist()
    rejects = pq.read_table(out / "rejects.parquet", columns=["clip_id", "stage", "reason"]).to_pylist()
    return index, rejects


def shard_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "shards").glob("*.tar"))}


@pytest.fixture(scope="module")
def cluster_extract(head, corpus, tiny_clip, tmp_path_factory):
    """The sample corpus extracted by a job submitted to the head: (output folder, submission, args)."""
    out = tmp_path_factory.mktemp("cluster") / "extract"
    args = extract_args(corpus, tiny_clip, corpus.manifest, out)
    client = job_client(head.url)
    sub = submit(client, "extract", args)
    wait_ok(client, sub.submission_id)
    return out, sub, args


def test_submitted_extract_matches_the_embedded_run(head, cluster_extract, extracted):
    out, sub, args = cluster_extract
    assert sub.created and sub.submission_id.startswith("vssflow-extract-")
    assert placed(out) == placed(extracted[0])  # same keys in the same shards, same rejects
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["unaccounted"] == 0 and report["this_run"]["where"].startswith("ray cluster at")
    info = job_client(head.url).get_job_info(sub.submission_id)
    assert info.entrypoint.startswith("python -m pipeline.cli run extract --manifest ")
    assert json.loads(info.metadata["vssflow_args"]) == args


def test_same_submission_the_same_day_is_not_submitted_again(head, cluster_extract):
    out, sub, args = cluster_extract
    client = job_client(head.url)
    submitted_on = datetime.fromtimestamp(client.get_job_info(sub.submission_id).start_time / 1000, timezone.utc)
    again = submit(client, "extract", args, now=lambda: submitted_on)   # the same UTC day as the first one
    assert (again.submission_id, again.created, again.status) == (sub.submission_id, False, "SUCCEEDED")
    today = submit(client, "extract", args)        # the suite may have crossed midnight since the fixture ran
    if today.created:
        wait_ok(client, today.submission_id)
    jobs_before = len(client.list_jobs())
    result = runner.invoke(cli, ["submit", "extract", *args, "--address", head.url, "--wait"])
    assert result.exit_code == 0, result.output
    assert today.submission_id in result.stdout and "already submitted" in result.output
    assert len(client.list_jobs()) == jobs_before


def test_jobs_status_and_logs_commands(head, cluster_extract):
    _, sub, _ = cluster_extract
    result = runner.invoke(cli, ["jobs", "status", sub.submission_id, "--address", head.url])
    assert result.exit_code == 0, result.output
    assert "SUCCEEDED" in result.stdout and "pipeline.cli run extract" in result.output
    result = runner.invoke(cli, ["jobs", "logs", sub.submission_id, "--address", head.url])
    assert result.exit_code == 0 and "rejected" in result.stdout and "report:" in result.stdout
    result = runner.invoke(cli, ["jobs", "list", "--address", head.url])
    assert result.exit_code == 0 and f"{sub.submission_id}  SUCCEEDED" in result.stdout
    result = runner.invoke(cli, ["jobs", "status", "vssflow-nope", "--address", head.url])
    assert result.exit_code == 1 and "no job vssflow-nope" in result.output


def test_scheduler_fires_incremental_extracts_and_skips_while_running(head, corpus, tiny_clip, tmp_path):
    """Real firings on the head under a fake clock: extract, a firing skipped while it runs, then an increment."""
    from pipeline.cluster.schedule import ScheduleStore, tick

    table = pq.read_table(corpus.manifest)
    good = pc.is_in(table["clip_id"], value_set=pa.array(sorted(corpus.good_ids())))
    tts = table.filter(pc.and_(good, pc.equal(table["task"], "tts")))
    assert tts.num_rows >= 4
    manifest = tmp_path / "manifest.parquet"
    write_manifest(tts.slice(0, 4), manifest)
    out = tmp_path / "scheduled"
    store = ScheduleStore(tmp_path / "schedules.json")
    t0 = datetime(2030, 1, 1, 0, 10, tzinfo=timezone.utc)
    store.add("hourly", "0 * * * *", "extract", extract_args(corpus, tiny_clip, manifest, out), now=lambda: t0)
    client = job_client(head.url)

    assert tick(store, client, t0 + timedelta(minutes=30)) == []
    (first,) = tick(store, client, t0 + timedelta(minutes=50, seconds=30))
    assert first["status"] == "PENDING" and first["due"] == "2030-01-01T01:00:00+00:00"
    (skipped,) = tick(store, client, t0 + timedelta(hours=1, minutes=50, seconds=30))  # the 02:00 firing
    assert skipped["status"] == "SKIPPED" and first["submission_id"] in skipped["detail"]
    wait_ok(client, first["submission_id"])
    before = shard_digests(out)
    assert len(before) == 1

    grown = tts.slice(0, 3).set_column(0, "clip_id", pa.array([f"added_{i}" for i in range(3)]))
    write_manifest(pa.concat_tables([tts.slice(0, 4), grown.cast(tts.schema)]), manifest)
    (second,) = tick(store, client, t0 + timedelta(hours=2, minutes=50, seconds=30))  # the 03:00 firing
    assert second["status"] == "PENDING" and second["submission_id"] != first["submission_id"]
    wait_ok(client, second["submission_id"])
    after = shard_digests(out)
    assert {k: after[k] for k in before} == before  # the first shard is untouched
    (new,) = set(after) - set(before)
    assert [s["key"] for s in iter_samples([out / "shards" / new])] == ["added_0", "added_1", "added_2"]
    assert json.loads((out / "report.json").read_text())["this_run"]["rows_todo"] == 3

    assert tick(store, client, t0 + timedelta(hours=2, minutes=55)) == []
    firings = store.list()[0]["firings"]
    assert [(f["due"][11:16], f["status"]) for f in firings] == [("01:00", "SUCCEEDED"), ("02:00", "SKIPPED"),
                                                                ("03:00", "SUCCEEDED")]


def test_worker_killed_mid_job_loses_no_row(head, corpus, tiny_clip, extracted, tmp_path):
    """SIGKILL the worker process running one of the job's unit tasks while units are still being written: Ray
    retries the task (a system failure; Ray Data's tasks retry without limit), the unit is written again from its
    first row, and the job ends as an undisturbed run does, byte for byte."""
    import psutil
    from ray.util.state import list_tasks

    out = tmp_path / "killed"
    client = job_client(head.url)
    sub = submit(client, "extract", extract_args(corpus, tiny_clip, corpus.manifest, out), tag="kill-test")
    units = out / "_work" / "units"
    deadline = time.monotonic() + JOB_TIMEOUT_S
    running = []
    while not running:
        assert time.monotonic() < deadline and job_status(client, sub.submission_id) in ("PENDING", "RUNNING"), \
            client.get_job_logs(sub.submission_id)[-3000:]
        if units.is_dir() and list(units.glob("*.done.json")):
            running = [t for t in list_tasks(address=head.url, filters=[("state", "=", "RUNNING")], detail=True)
                       if "make_units" in t.name or "MapBatches" in t.name]
        time.sleep(0.1)
    victim = psutil.Process(running[0].worker_pid)
    busy = " ".join([victim.name(), *victim.cmdline()])    # a worker is named after the task it runs, IDLE between
    victim.send_signal(signal.SIGKILL)
    assert "MapBatches(make_units)" in busy, busy
    done_at_kill = len(list(units.glob("*.done.json")))
    total_units = len(shard_digests(extracted[0]))
    assert done_at_kill < total_units, "the kill landed after the last unit"

    wait_ok(client, sub.submission_id)
    index, rejects = placed(out)
    manifest_ids = set(pq.read_table(corpus.manifest)["clip_id"].to_pylist())
    kept, rejected = [r["key"] for r in index], [r["clip_id"] for r in rejects]
    assert len(kept) + len(rejected) == len(manifest_ids) and set(kept) | set(rejected) == manifest_ids
    assert (index, rejects) == placed(extracted[0])
    assert shard_digests(out) == shard_digests(extracted[0])


# -- pipeline status -------------------------------------------------------------------------------------------

def test_status_of_a_finished_output(corpus, extracted):
    from pipeline.status import output_status

    out, report = extracted
    status = output_status(out)
    assert status["shards"] == report["counts"]["shards"] == status["units_done"] == status["units_planned"]
    assert status["rows"] == len(corpus.expected) and status["units_since_report"] == 0
    expected = {}
    for e in corpus.expected.values():
        if e["outcome"] == "reject":
            expected[f"{e['stage']}/{e['reason']}"] = expected.get(f"{e['stage']}/{e['reason']}", 0) + 1
    assert status["rejects_by_reason"] == expected
    runs = [json.loads(line) for line in (out / "_work" / "runs.jsonl").read_text().splitlines()]
    assert status["runs"] == len(runs) >= 1 and status["last_run"] == runs[-1]
    result = runner.invoke(cli, ["status", str(out)])
    assert result.exit_code == 0, result.output
    assert "decode/missing_file" in result.output and "last run" in result.output
    result = runner.invoke(cli, ["status", str(out), "--json"])
    assert json.loads(result.stdout)["kept"] == report["counts"]["kept"]


def test_status_of_a_first_run_still_going(tmp_path):
    """Before the first report exists, progress comes from the ledger: units planned and finished."""
    from pipeline.jobs.ledger import Ledger
    from pipeline.status import output_status
    from stages.format.layout import file_checksum, shard_entry
    from stages.format.shard_io import AtomicShardWriter

    ledger = Ledger(tmp_path)
    ledger.extend_plan(pa.array([f"c{i}" for i in range(10)]), shard_size=4)  # 3 units
    entry = shard_entry("extract", 0)
    with AtomicShardWriter(tmp_path / entry):
        pass
    ledger.record_unit(0, pa.table({"key": ["c0"]}), pa.table({"clip_id": pa.array([], pa.string())}),
                       {"unit": 0, "shard": entry, "shard_size": (tmp_path / entry).stat().st_size,
                        "shard_sha256": file_checksum(tmp_path / entry), "rows": 4, "bytes": 1, "clip_seconds": 1.0})
    status = output_status(tmp_path)
    assert (status["units_done"], status["units_planned"], status["rows"]) == (1, 3, None)
    result = runner.invoke(cli, ["status", str(tmp_path)])
    assert result.exit_code == 0 and "1 of 3 units done" in result.output and "no report yet" in result.output
    result = runner.invoke(cli, ["status", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "holds no job output" in result.output


# -- the cluster commands a user runs against a head ------------------------------------------------------------

def test_the_scheduler_process_fires_a_due_job_that_stop_and_follow_handle(head, corpus, tiny_clip, tmp_path):
    """The long-running `pipeline scheduler` submits a due firing; `jobs stop` stops it; `jobs logs --follow`
    prints its log until it has ended."""
    from pipeline.cluster.schedule import ScheduleStore
    from pipeline.cluster.submit import utc_now

    store = ScheduleStore(tmp_path / "schedules.json")
    two_minutes_ago = utc_now() - timedelta(minutes=2)      # so the first firing is due at once
    store.add("minutely", "* * * * *", "extract", extract_args(corpus, tiny_clip, corpus.manifest, tmp_path / "o"),
              now=lambda: two_minutes_ago)
    log = tmp_path / "scheduler.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    scheduler = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "scheduler", "--address", head.url,
                                  "--store", str(store.path), "--poll-s", "1"], cwd=REPO, env=env,
                                 stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not any(f.get("submission_id") for f in store.list()[0]["firings"]):
            assert time.monotonic() < deadline and scheduler.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        scheduler.terminate()
        scheduler.wait(30)
    (firing,) = [f for f in store.list()[0]["firings"] if f.get("submission_id")]
    sid = firing["submission_id"]
    assert "minutely" in log.read_text() and sid in log.read_text()
    client = job_client(head.url)
    result = runner.invoke(cli, ["jobs", "stop", sid, "--address", head.url])
    assert result.exit_code == 0 and f"{sid}: stop requested" in result.output, result.output
    result = runner.invoke(cli, ["jobs", "logs", sid, "--address", head.url, "--follow"])
    assert result.exit_code == 0, result.output
    assert wait_for(client, sid, timeout_s=JOB_TIMEOUT_S) == "STOPPED"


def test_submit_wait_on_a_failing_job_exits_1_with_its_log(head, corpus, tiny_clip, tmp_path):
    missing = tmp_path / "no-such-manifest.parquet"          # parses on the laptop, fails on the cluster
    args = extract_args(corpus, tiny_clip, missing, tmp_path / "o")
    result = runner.invoke(cli, ["submit", "extract", *args, "--address", head.url, "--wait",
                                 "--tag", f"failing-{tmp_path.name}"])
    said = " ".join(result.output.split())
    assert result.exit_code == 1, said
    assert ": FAILED" in said and "no-such-manifest.parquet does not exist" in said
