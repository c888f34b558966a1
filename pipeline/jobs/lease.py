"""One writer per output: a local lock file, or a lease object on object storage.

A local folder is locked with the OS's flock (`OUT/_work.lock`), so a killed run leaves nothing to clean up.
Object storage has no locks, so a run holds a lease, `OUT/_work.lease`:
- taken with a conditional write that succeeds only if no lease exists (S3 `If-None-Match: *`);
- renewed every `ttl_s / 3` seconds by a conditional overwrite of the version it wrote (`If-Match: ETag`), so a
  run that lost its lease finds out at its next renewal and stops before recording another unit;
- expiring `ttl_s` after its last renewal (the store's own clock, `Last-Modified`): a crashed run's lease is
  taken over, again conditionally, by the next run; a live run's lease is refused with OutputBusy.
`VSSFLOW_LEASE_TTL_S` sets the time to live (default 60 s): a longer one is safer against a stalled driver's
renewals, a shorter one lets a re-run start sooner after a crash.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from manifests import storage
from pipeline.errors import OutputBusy
from stages.format.layout import OutputDir

DEFAULT_TTL_S = 60.0


class ObjectLease:
    """The lease of an output on object storage (see the module docstring)."""

    def __init__(self, location: str, ttl_s: Optional[float] = None):
        self.location = location
        self.ttl_s = float(ttl_s or os.environ.get("VSSFLOW_LEASE_TTL_S") or DEFAULT_TTL_S)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.etag: Optional[str] = None
        self.lost: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._renewed = 0.0

    def _body(self) -> bytes:
        return json.dumps({"owner": self.owner, "ttl_s": self.ttl_s, "renewed_at": time.time()}).encode()

    def acquire(self) -> None:
        storage.require_conditional_writes(self.location)
        if not storage.create_exclusive(self.location, self._body()):
            self._take_over()
        self.etag = storage.head(self.location)["etag"]
        self._renewed = time.time()
        self._thread = threading.Thread(target=self._renew_loop, name="output-lease", daemon=True)
        self._thread.start()

    def _take_over(self) -> None:
        info = storage.head(self.location)
        if info is None:                      # released meanwhile: try once more from scratch
            if storage.create_exclusive(self.location, self._body()):
                return
            info = storage.head(self.location)
        try:
            holder = json.loads(storage.read_bytes(self.location))
        except (ValueError, FileNotFoundError):
            holder = {}
        ttl = float(holder.get("ttl_s") or DEFAULT_TTL_S)
        age = time.time() - info["modified"]
        if age < ttl:
            raise OutputBusy(f"another run is writing {self.location.rsplit('/', 1)[0]} (lease held by "
                             f"{holder.get('owner', 'unknown')}, renewed {age:.0f}s ago, expires after {ttl:.0f}s "
                             "without renewal); wait for it to finish, or use another --out")
        if not storage.replace_if(self.location, self._body(), info["etag"]):
            raise OutputBusy(f"another run took the expired lease {self.location} at the same moment; "
                             "use another --out or try again")

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            if not self.renew():
                return

    def renew(self) -> bool:
        """Extend the lease; False (and `lost` set) when another run holds it now."""
        if self.lost:
            return False
        try:
            ok = storage.replace_if(self.location, self._body(), self.etag)
        except OSError as e:       # the store is unreachable: keep trying until the lease would have expired
            return self._unreachable(e)
        if not ok:
            self.lost = f"the lease {self.location} was taken by another run (this run stalled past its expiry)"
            return False
        self.etag = storage.head(self.location)["etag"]
        self._renewed = time.time()
        return True

    def _unreachable(self, error: OSError) -> bool:
        if time.time() - self._renewed > self.ttl_s:
            self.lost = f"the lease {self.location} could not be renewed for {self.ttl_s:.0f}s: {error}"
            return False
        return True

    def check(self) -> None:
        """Raise OutputBusy when the lease is lost: called before every ledger entry."""
        if self.lost:
            raise OutputBusy(f"stopped: {self.lost}. Finished shards are kept; run again to resume")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        info = storage.head(self.location)
        if not self.lost and info is not None and info["etag"] == self.etag:
            storage.delete(self.location)


class FileLease:
    """A local folder's lock: the OS's flock, released by the OS when the process dies."""

    def __init__(self, path: Path):
        from filelock import FileLock

        self.path = path
        self.lock = FileLock(str(path), timeout=0)

    def acquire(self) -> None:
        from filelock import Timeout

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.lock.acquire()
        except Timeout:
            raise OutputBusy(f"another run is writing {self.path.parent} (lock {self.path}); wait for it to "
                             "finish, or use another --out") from None

    def check(self) -> None:
        """A flock cannot be lost while the process lives."""

    def release(self) -> None:
        self.lock.release()


@contextmanager
def held(out: storage.Location) -> Iterator[object]:
    """Hold the output's lock or lease for the block; yields it (call `.check()` before each ledger entry)."""
    folder = OutputDir(out)
    lease = ObjectLease(folder.lock) if folder.remote else FileLease(folder.lock)
    lease.acquire()
    try:
        yield lease
    finally:
        lease.release()
