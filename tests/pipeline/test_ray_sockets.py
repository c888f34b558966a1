"""The embedded Ray (issue 15, 3): every listening socket on loopback, and nothing left behind by a killed driver.

Each test runs its own embedded Ray in a subprocess, started the way the CLI starts it (ray imported before
`init_ray`, no RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER in the environment), so the session-wide Ray of the other tests,
which conftest starts on loopback, proves nothing here.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap

import psutil

STARTUP = textwrap.dedent("""
    import json, os, sys, time
    import psutil, ray  # imported first, as the CLI's modules do before any job starts
    from pipeline.jobs.ray_exec import init_ray

    init_ray(None, num_cpus=1)

    @ray.remote
    def pid():
        return os.getpid()

    @ray.remote
    class Counter:
        def pid(self):
            return os.getpid()

    ray.get([pid.remote(), Counter.remote().pid.remote()])  # a worker and an actor are up too
    tree = psutil.Process().children(recursive=True)
    listening = [(p.pid, p.name(), c.laddr.ip, c.laddr.port) for p in tree
                 for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    listening += [(os.getpid(), "driver", c.laddr.ip, c.laddr.port)
                  for c in psutil.Process().net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    print(json.dumps({"listening": listening,
                      "processes": [(p.pid, p.create_time(), p.name()) for p in tree]}), flush=True)
    if sys.argv[1] == "wait":
        time.sleep(600)
    ray.shutdown()
""")


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    return dict(env, PYTHONPATH=os.pathsep.join(sys.path))


def _start(mode: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-c", STARTUP, mode], stdout=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True)
    for line in proc.stdout:
        if line.startswith("{"):
            return proc, json.loads(line)
    proc.wait()
    raise AssertionError(f"embedded Ray did not start (exit {proc.returncode})")


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)


def _alive(processes) -> list:
    """The (pid, create_time, name) entries still running as the same process."""
    left = []
    for pid, created, name in processes:
        try:
            if abs(psutil.Process(pid).create_time() - created) < 1e-3 and psutil.Process(pid).status() != "zombie":
                left.append((pid, created, name))
        except psutil.Error:
            pass
    return left


def _end(processes) -> None:
    """End, by pid, what this test started and is still running (so a failing test leaves nothing behind)."""
    for pid, _, _ in _alive(processes):
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


def test_embedded_ray_listens_on_loopback_only():
    proc, seen = _start("exit")
    try:
        assert proc.wait(timeout=120) == 0
        names = {name for _, name, _, _ in seen["listening"]}
        assert "gcs_server" in names and "raylet" in names  # the sockets of the processes that matter were seen
        exposed = [entry for entry in seen["listening"] if not _is_loopback(entry[2])]
        assert exposed == [], f"listening beyond loopback: {exposed}"
    finally:
        _end(seen["processes"])


def test_a_killed_driver_leaves_no_agent_behind_after_the_next_start():
    first, seen = _start("wait")
    try:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
        second, _ = _start("exit")
        assert second.wait(timeout=120) == 0
        assert _alive(seen["processes"]) == [], "processes of the killed run outlived the next start"
    finally:
        _end(seen["processes"])
