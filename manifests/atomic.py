"""The one way a file is written: to a temporary name beside it, flushed to disk, then renamed over the target.

A reader therefore sees either the old file or the whole new one, never a half-written file, and a process killed
mid-write leaves only a `.NAME.tmp` file behind (overwritten by the next attempt).

It sits in the lowest layer, beside path safety, because every layer writes files (manifests, dataset.json, shards,
ledger, checkpoints, schedules) and imports point only downwards.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Iterator


def temp_path(path: Path, *, unique: bool = False) -> Path:
    """`.NAME.tmp` beside `path`; `unique` adds this writer's own part (`.NAME.PID-RANDOM.tmp`), for files that two
    processes may write at once (a shard redone while a killed run's orphaned worker still writes it: each renames
    its own whole file, the same bytes, over the target)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp" if unique else f".{path.name}.tmp")


def publish(tmp: Path, path: Path) -> Path:
    """Flush a finished temporary file to disk and rename it over `path` (for files another program wrote)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


class AtomicFile:
    """A file written under a temporary name: `commit()` flushes it to disk and renames it into place, `abort()`
    deletes it. `file` is the open file object (binary for mode "wb", UTF-8 text for "w")."""

    def __init__(self, path: str | os.PathLike, mode: str = "wb", *, unique: bool = False):
        if mode not in ("wb", "w"):
            raise ValueError(f"atomic files are written whole: mode 'wb' or 'w', not {mode!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.path, unique=unique)
        self.file: IO = open(self.tmp, mode, **({"encoding": "utf-8"} if mode == "w" else {}))

    def commit(self) -> Path:
        self.file.close()
        return publish(self.tmp, self.path)

    def abort(self) -> None:
        """Delete the temporary file; it must go even when closing it fails (a full disk fails the flush too)."""
        try:
            self.file.close()
        except OSError:
            pass
        finally:
            self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write a file through `AtomicFile`: committed on a clean exit, deleted when the block raises."""
    target = AtomicFile(path, mode)
    try:
        yield target.file
    except BaseException:
        target.abort()
        raise
    target.commit()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_parquet(path: str | os.PathLike, table) -> Path:
    import pyarrow.parquet as pq

    with atomic_open(path, "wb") as f:
        pq.write_table(table, f)
    return Path(path)
