"""Shared benchmark helpers."""

from __future__ import annotations

import threading
import time


def own_memory_mb() -> dict[str, float]:
    """This process's resident memory in MB (Linux /proc/self/smaps_rollup): `rss`, and `anonymous`, its private
    heap and native allocations. Rss also counts the pages of shared libraries and of Ray's object store that
    this process maps (shared with Ray's workers); Anonymous does not."""
    fields = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Anonymous:"):
                fields[parts[0][:-1].lower()] = float(parts[1]) / 1024
    return fields


class PeakRss:
    """Peak resident memory of this process and all its descendants (Ray's raylet and workers included), and of
    this process alone over the same span (`driver_peak_mb`, `driver_anonymous_peak_mb`: the Ray job's driver).
    Use these rather than ru_maxrss (report.json's driver_peak_rss_mb), which is the peak of the process's whole
    life: in a benchmark that first runs the sequential loop in the same process, it is the loop's peak."""

    def __init__(self, every_s: float = 0.2, exclude: tuple = ()):
        import psutil

        self.root = psutil.Process()
        self.exclude = set(exclude)
        self.every_s, self.peak_mb, self._stop = every_s, 0.0, threading.Event()
        self.driver_peak_mb = self.driver_anonymous_peak_mb = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        total = 0
        for p in [self.root, *self.root.children(recursive=True)]:
            if p.pid in self.exclude:
                continue
            try:
                total += p.memory_info().rss
            except Exception:  # noqa: BLE001 - processes come and go
                pass
        return total / 2**20

    def _run(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._sample())
            own = own_memory_mb()
            self.driver_peak_mb = max(self.driver_peak_mb, own["rss"])
            self.driver_anonymous_peak_mb = max(self.driver_anonymous_peak_mb, own["anonymous"])
            time.sleep(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()


class LocalS3:
    """A local S3-compatible server (moto's server mode) on 127.0.0.1 with one bucket, for benchmarks of
    object-storage outputs; the endpoint and fake credentials are set in this process's environment. Its pid is
    `pid`: leave it out of PeakRss (it holds every object in memory)."""

    def __init__(self, bucket: str = "bench"):
        self.bucket = bucket

    def __enter__(self):
        import os
        import socket
        import subprocess
        import sys

        import boto3

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        boto3.client("s3").create_bucket(Bucket=self.bucket)
        return self

    def url(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    def __exit__(self, *_):
        self.proc.terminate()
        self.proc.wait(timeout=30)
