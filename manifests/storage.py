"""One filesystem layer for every file a job reads or writes: local paths and object-storage URLs.

A location is either a local path (`Path` or a string without a scheme) or a URL (`s3://bucket/key`,
`gs://bucket/key`, `memory://...`). Local files keep the protocol of `manifests/atomic.py` (temporary name,
fsync, rename). Object storage has no rename, so its protocol is the store's own atomicity: an object becomes
visible only whole, by one PUT or a completed multipart upload, and an upload that fails is aborted (`Sink`).

Why fsspec (and not pyarrow.fs): the one-writer lease needs conditional writes (S3's `If-None-Match: *` and
`If-Match`), which s3fs exposes and pyarrow.fs does not; fsspec's streaming files upload in parts and can be
discarded; the same interface covers s3fs, gcsfs and local files, and the trainer's tar reader takes its file
objects as they are.

Object-store settings come from the environment, as the AWS tools read them: credentials from the usual chain
(environment, `~/.aws`, an instance role) and the endpoint from `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` (an
S3-compatible server). `FORWARDED_ENV` names the settings that are not secrets: a job forwards them to its Ray
workers so that every process talks to the same endpoint.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from pathlib import Path
from typing import IO, Any, Optional, Union

from manifests.atomic import AtomicFile, atomic_write_bytes
from manifests.errors import UsageError

Location = Union[str, Path]

FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
PART_BYTES = 16 << 20        # streaming uploads go in parts of this size (S3's minimum part is 5 MiB)
_filesystems: dict[tuple, Any] = {}


def is_url(location: Location) -> bool:
    """A location on object storage (a scheme other than file://); local paths are not URLs."""
    return isinstance(location, str) and "://" in location and not location.startswith("file://")


def scheme(location: Location) -> str:
    return location.split("://", 1)[0] if is_url(location) else "file"


def as_location(location: Location) -> Location:
    """A URL stays a string (without a trailing slash); anything else becomes a Path."""
    if is_url(location):
        return str(location).rstrip("/")
    text = str(location)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def join(root: Location, *parts: str) -> Location:
    if is_url(root):
        return "/".join([str(root).rstrip("/"), *parts])
    return Path(root).joinpath(*parts)


def within(root: Location, relative: str) -> Optional[Location]:
    """`root/relative`, or None when `relative` leaves root (`..`, an absolute path, another URL)."""
    if is_url(root):
        if "://" in relative or relative.startswith("/"):
            return None
        normal = posixpath.normpath(relative)
        if normal == ".." or normal.startswith("../") or normal == ".":
            return None
        return join(root, normal)
    path = (Path(root) / relative).resolve()
    return path if path.is_relative_to(Path(root).resolve()) else None


def storage_env() -> dict[str, str]:
    """The non-secret object-store settings of this process (forwarded to Ray workers)."""
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}


def filesystem(location: Location):
    """The fsspec filesystem of a location (one per scheme and settings, per process)."""
    kind = scheme(location)
    key = (kind, tuple(sorted(storage_env().items())))
    if key not in _filesystems:
        import fsspec

        options: dict[str, Any] = {}
        if kind == "s3":
            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            options = {"client_kwargs": {k: v for k, v in (("endpoint_url", endpoint), ("region_name", region)) if v},
                       "use_listings_cache": False}
        _filesystems[key] = fsspec.filesystem(kind, **options)
    return _filesystems[key]


def _path(location: Location) -> str:
    return str(location) if is_url(location) else str(Path(location))


# -- reading ---------------------------------------------------------------------------------------------------

def exists(location: Location) -> bool:
    if not is_url(location):
        return Path(location).is_file()
    return filesystem(location).isfile(_path(location))


def size(location: Location) -> Optional[int]:
    """Bytes of the file, None when there is none."""
    if not is_url(location):
        path = Path(location)
        return path.stat().st_size if path.is_file() else None
    try:
        return int(filesystem(location).info(_path(location))["size"])
    except FileNotFoundError:
        return None


def read_bytes(location: Location) -> bytes:
    if not is_url(location):
        return Path(location).read_bytes()
    return filesystem(location).cat_file(_path(location))


def open_read(location: Location) -> IO[bytes]:
    """A binary file object (seekable; object storage reads ranges as they are asked for)."""
    if not is_url(location):
        return open(location, "rb")
    return filesystem(location).open(_path(location), "rb", block_size=PART_BYTES)


def listdir(folder: Location, suffix: str = "") -> list[Location]:
    """The files directly inside `folder` whose name ends with `suffix`, sorted; [] when there is no folder."""
    if not is_url(folder):
        path = Path(folder)
        return sorted(p for p in path.glob(f"*{suffix}") if p.is_file()) if path.is_dir() else []
    fs = filesystem(folder)
    try:
        names = fs.ls(_path(folder), detail=True)
    except FileNotFoundError:
        return []
    prefix = f"{scheme(folder)}://"
    found = [n["name"] for n in names if n["type"] == "file" and n["name"].endswith(suffix)]
    return sorted(name if name.startswith(prefix) else prefix + name for name in found)


def checksum(location: Location) -> str:
    """sha256 of a file, read in 1 MiB blocks (a shard never has to fit in memory)."""
    digest = hashlib.sha256()
    with open_read(location) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- writing ---------------------------------------------------------------------------------------------------

def write_bytes(location: Location, data: bytes) -> Location:
    """The whole file at once: atomic rename locally, one PUT on object storage."""
    if not is_url(location):
        return atomic_write_bytes(location, data)
    filesystem(location).pipe_file(_path(location), data)
    return location


def delete(location: Location) -> None:
    if not is_url(location):
        Path(location).unlink(missing_ok=True)
        return
    try:
        filesystem(location).rm_file(_path(location))
    except FileNotFoundError:
        pass


class Sink:
    """A file written as a stream and published whole: `commit()` makes it visible (rename, or completing the
    upload), `abort()` leaves nothing (temporary file deleted, multipart upload aborted). Its size and sha256
    are computed from the bytes as they are written, so publishing a shard never reads it back."""

    def __init__(self, location: Location):
        self.location = as_location(location)
        if is_url(self.location):
            self._atomic = None
            self._file = filesystem(self.location).open(_path(self.location), "wb", block_size=PART_BYTES)
        else:
            self._atomic = AtomicFile(self.location, unique=True)   # two writers of one shard never collide
            self._file = self._atomic.file
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._file.write(data)
        self._digest.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing to do: the stream is published whole by `commit()` (tarfile calls flush on close)."""

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def commit(self) -> Location:
        if self._atomic is not None:
            return self._atomic.commit()
        self._file.close()
        return self.location

    def abort(self) -> None:
        if self._atomic is not None:
            self._atomic.abort()
            return
        discard = getattr(self._file, "discard", None)
        if discard is not None:
            discard()               # aborts the multipart upload: nothing becomes visible


# -- conditional writes (the one-writer lease) ------------------------------------------------------------------

def head(location: Location) -> Optional[dict[str, Any]]:
    """{size, etag, modified (epoch seconds)} of an object, None when there is none."""
    fs = filesystem(location)
    try:
        info = fs.info(_path(location), refresh=True) if scheme(location) == "s3" else fs.info(_path(location))
    except FileNotFoundError:
        return None
    modified = info.get("LastModified") or info.get("mtime") or info.get("updated")
    stamp = modified.timestamp() if hasattr(modified, "timestamp") else float(modified or 0)
    return {"size": int(info["size"]), "etag": str(info.get("ETag") or info.get("etag") or "").strip('"'),
            "modified": stamp}


def create_exclusive(location: str, data: bytes) -> bool:
    """Write the object only if none exists (S3 `If-None-Match: *`); False when one exists already."""
    try:
        filesystem(location).pipe_file(_path(location), data, mode="create")
    except (FileExistsError, OSError) as e:
        if _precondition_failed(e):
            return False
        raise
    return True


def require_conditional_writes(location: Location) -> None:
    """The one-writer lease needs conditional writes: implemented for s3:// (AWS S3 and S3-compatible stores)."""
    if scheme(location) != "s3":
        raise UsageError(f"{location}: an output on object storage needs conditional writes for its one-writer "
                         "lease; they are implemented for s3:// (AWS S3 and S3-compatible stores)")


def replace_if(location: str, data: bytes, etag: str) -> bool:
    """Overwrite the object only while it is still the version `etag` (S3 `If-Match`); False otherwise."""
    require_conditional_writes(location)
    fs = filesystem(location)
    bucket, key, _ = fs.split_path(_path(location))
    try:
        fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfMatch=f'"{etag}"')
    except (FileNotFoundError, OSError) as e:
        if _precondition_failed(e) or isinstance(e, FileNotFoundError):
            return False
        raise
    return True


def _precondition_failed(error: BaseException) -> bool:
    text = f"{type(error).__name__} {error} {error.__cause__!r}"
    return isinstance(error, FileExistsError) or "PreconditionFailed" in text or "412" in text
