"""Shared benchmark helpers."""

from __future__ import annotations

import threading
import time


class PeakRss:
    """Peak resident memory of this process and all its descendants (Ray's raylet and workers included)."""

    def __init__(self, every_s: float = 0.2):
        import psutil

        self.root = psutil.Process()
        self.every_s, self.peak_mb, self._stop = every_s, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        total = 0
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except Exception:  # noqa: BLE001 - processes come and go
                pass
        return total / 2**20

    def _run(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._sample())
            time.sleep(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()
