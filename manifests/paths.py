"""Media paths in a manifest stay under the data root given at run time: a manifest cannot make a job
read a file outside that folder.

A manifest path is relative to the data root; an absolute path is accepted only when it lies under the root.
Paths are resolved (`..` collapsed, symlinks followed) before the check, so neither `../` tricks nor a symlink
that points out of the root can reach a file outside it. A data root on object storage (`s3://bucket/corpus`)
takes relative paths only, `..` collapsed the same way (`manifests.storage.within`); `fetch_media` copies such an
object into a local scratch file for the decoders.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from manifests import storage
from manifests.media_sniff import NotMedia, sniff_container
from manifests.validate import MEDIA_COLUMNS


class InvalidPath(ValueError):
    """A manifest path that is not a path at all (empty, or with a NUL byte)."""


class PathEscapesRoot(ValueError):
    """A manifest path that resolves to a file outside the data root."""


def resolve_under_root(root: str | Path, path: str) -> Path | str:
    """The absolute, resolved location of manifest path `path` under `root`.

    Relative paths are joined to root; absolute ones must already lie under it. Raises InvalidPath for an empty
    path or one holding a NUL byte, PathEscapesRoot when the resolved file lies outside the resolved root.
    The file need not exist.
    """
    if not isinstance(path, str) or not path.strip():
        raise InvalidPath(f"empty media path {path!r}")
    if "\x00" in path:
        raise InvalidPath(f"media path {path!r} holds a NUL byte")
    if storage.is_url(str(root)):
        url = storage.within(str(root), path)
        if url is None:
            raise PathEscapesRoot(f"media path {path!r} leaves the data root {root}")
        return url
    root_resolved = Path(root).resolve()
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = root_resolved / candidate
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root_resolved):
        raise PathEscapesRoot(f"media path {path!r} resolves to {resolved}, outside the data root {root_resolved}")
    return resolved


MEDIA_SCRATCH = Path(tempfile.gettempdir()) / f"vssflow-media-{os.getpid()}"


def fetch_media(url: str) -> Path:
    """A local copy of a media object (for decoders, which read local files), under this process's scratch folder;
    the caller deletes it when done. FileNotFoundError when there is no such object."""
    if not storage.exists(url):
        raise FileNotFoundError(url)
    MEDIA_SCRATCH.mkdir(parents=True, exist_ok=True)
    name = url.rsplit("/", 1)[-1]
    local = MEDIA_SCRATCH / f"{hashlib.sha1(url.encode()).hexdigest()[:16]}-{name}"
    with storage.open_read(url) as src, open(local, "wb") as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            dst.write(block)
    return local


class PathProblem(NamedTuple):
    row_index: int
    clip_id: str
    column: str  # video_path or audio_path
    problem: str  # "invalid", "escapes_root", "missing" or "not_media"
    detail: str


def check_media_paths(table: pa.Table, root: str | Path) -> list[PathProblem]:
    """Every non-null media path of a manifest that is invalid, escapes `root`, names no existing file, or names a
    file that is not self-contained media (a playlist or concat list that would read other files, or unknown
    bytes: `manifests.media_sniff`, the check every decode makes first).

    This touches the file system once per path (a stat and a read of its first bytes), so it takes a while on large
    manifests on network storage.
    """
    problems: list[PathProblem] = []
    ids = table["clip_id"].to_pylist()
    for column in MEDIA_COLUMNS:
        for row, path in enumerate(table[column].to_pylist()):
            if path is None:
                continue
            try:
                resolved = resolve_under_root(root, path)
            except InvalidPath as e:
                problems.append(PathProblem(row, ids[row], column, "invalid", str(e)))
                continue
            except PathEscapesRoot as e:
                problems.append(PathProblem(row, ids[row], column, "escapes_root", str(e)))
                continue
            if isinstance(resolved, str):     # object storage: existence only (its bytes are sniffed on decode)
                if not storage.exists(resolved):
                    problems.append(PathProblem(row, ids[row], column, "missing", f"no object at {resolved}"))
                continue
            if not resolved.is_file():
                problems.append(PathProblem(row, ids[row], column, "missing", f"no file at {resolved}"))
                continue
            try:
                if resolved.stat().st_size:  # an empty file is decode's `empty_file`
                    sniff_container(resolved)
            except NotMedia as e:
                problems.append(PathProblem(row, ids[row], column, "not_media", str(e)))
            except OSError as e:
                problems.append(PathProblem(row, ids[row], column, "not_media", f"unreadable_media: {e}"))
    problems.sort(key=lambda p: (p.row_index, p.column))
    return problems
