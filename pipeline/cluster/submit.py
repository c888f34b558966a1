"""`pipeline submit`: run any `pipeline run JOB ...` on a Ray cluster as a Ray job.

The project travels with the job: its folder is the job's `working_dir` (less the virtual environment, demo and
benchmark outputs, git history), so the cluster runs the code you submitted, with the dependencies that
`scripts/setup.sh` installed on its nodes (see ray_cluster.yaml). Paths in the job's arguments are read on the
cluster: give paths on storage every node sees.

Submission ids are deterministic: a hash of the job, its arguments, the UTC day and an optional tag. Submitting
the same job with the same arguments twice on one day finds the first submission instead of starting a second
run; a tag (`--tag`, or the firing time for schedules) makes a deliberate new run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

ID_PREFIX = "vssflow"
# Relative to the project folder (gitignore syntax, as Ray reads them): what must never be uploaded with a job.
EXCLUDES = ["/.venv/", "/demo/", "/bench/out/", "/runs/", "/.git/", "__pycache__/", "*.egg-info/",
            ".pytest_cache/", ".ruff_cache/", "*.pyc"]
# Models and data are local directories; a job must never try to reach a model hub.
JOB_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


JobCheck = Callable[[str, Sequence[str]], None]
"""(job, args) -> None, or an error saying what is wrong with them (pipeline.cli.run.check_job_args)."""


def submission_id(job: str, args: Sequence[str], *, day: date, tag: Optional[str] = None) -> str:
    payload = json.dumps({"job": job, "args": list(args), "day": day.isoformat(), "tag": tag}, sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return f"{ID_PREFIX}-{job}-{day:%Y%m%d}-{digest}"


def entrypoint(job: str, args: Sequence[str]) -> str:
    return shlex.join(["python", "-m", "pipeline.cli", "run", job, *args])


def runtime_env(root: Optional[Path] = None) -> dict[str, Any]:
    return {"working_dir": str(root or repo_root()), "excludes": list(EXCLUDES), "env_vars": dict(JOB_ENV)}


def auth_token() -> Optional[str]:
    """The cluster token the way Ray looks for it: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def auth_headers() -> dict[str, str]:
    """Ray's job server checks `Authorization: Bearer <token>` when the cluster runs with token auth."""
    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def job_client(address: str):
    """A JobSubmissionClient for the head's dashboard address, e.g. http://head:8265."""
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address, headers=auth_headers() or None)


def find_job(client, sid: str):
    """The job's details, or None when the cluster has never seen this submission id."""
    try:
        return client.get_job_info(sid)
    except RuntimeError as e:
        if "404" in str(e) or "does not exist" in str(e):
            return None
        raise


def job_status(client, sid: str) -> Optional[str]:
    info = find_job(client, sid)
    return None if info is None else str(getattr(info.status, "value", info.status))


@dataclass(frozen=True)
class Submission:
    submission_id: str
    created: bool      # False: the same submission already existed and was returned as it is
    status: str


def submit(client, job: str, args: Sequence[str], *, now: Callable[[], datetime] = utc_now,
           tag: Optional[str] = None, root: Optional[Path] = None, check: Optional[JobCheck] = None) -> Submission:
    """Submit `pipeline run JOB ARGS` once per (job, args, UTC day, tag); return the existing one otherwise.
    `check` parses the arguments first (None: they were checked already)."""
    args = list(args)
    if check is not None:
        check(job, args)
    sid = submission_id(job, args, day=now().astimezone(timezone.utc).date(), tag=tag)
    existing = job_status(client, sid)
    if existing is not None:
        return Submission(sid, False, existing)
    metadata = {"vssflow_job": job, "vssflow_args": json.dumps(args)}
    if tag:
        metadata["vssflow_tag"] = tag
    try:
        client.submit_job(entrypoint=entrypoint(job, args), submission_id=sid, runtime_env=runtime_env(root),
                          metadata=metadata)
    except RuntimeError as e:
        if "already" not in str(e).lower():  # another submitter won the race for the same id
            raise
        return Submission(sid, False, job_status(client, sid) or "PENDING")
    return Submission(sid, True, "PENDING")


def wait_for(client, sid: str, *, timeout_s: float, poll_s: float = 1.0,
             sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> str:
    """Poll until the job is SUCCEEDED, FAILED or STOPPED; TimeoutError after `timeout_s`."""
    deadline = clock() + timeout_s
    while True:
        status = job_status(client, sid)
        if status is None:
            raise KeyError(f"no job {sid} on this cluster")
        if status in TERMINAL:
            return status
        if clock() > deadline:
            raise TimeoutError(f"job {sid} still {status} after {timeout_s:.0f}s")
        sleep(poll_s)
