"""Shard I/O: one sample's members as bytes, deterministic atomic tar shards, and reading them back.

Shards are byte-identical across runs of the same job: fixed mtime, owner, mode and member order.
A shard is streamed into a `manifests.storage.Sink` (a temporary file renamed when complete, or an upload
completed when whole), so a shard that exists is whole; its size and sha256 come from the bytes as written.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from manifests import storage
from manifests.schema import CLIP_ID_PATTERN

ARRAY_MEMBERS = ("video", "mel", "latent", "phones")   # always present in decoded samples (None when absent)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def sample_members(key: str, meta: dict[str, Any], arrays: dict[str, Optional[np.ndarray]],
                   flac: Optional[bytes]) -> dict[str, bytes]:
    """The tar members of one sample (WebDataset: files sharing the key)."""
    if not isinstance(key, str) or not CLIP_ID_PATTERN.fullmatch(key):
        raise ValueError(f"invalid sample key {key!r}: keys follow the clip_id rule {CLIP_ID_PATTERN.pattern}")
    members: dict[str, bytes] = {"__key__": key,
                                 "json": json.dumps(meta, sort_keys=True, ensure_ascii=False, allow_nan=False, default=float).encode("utf-8")}
    extra = sorted(name for name in arrays if name not in ARRAY_MEMBERS)   # streams, validity, speaker
    for name in (*ARRAY_MEMBERS, *extra):
        if arrays.get(name) is not None:
            members[f"{name}.npy"] = npy_bytes(arrays[name])
    if flac is not None:
        members["audio.flac"] = flac
    return members


class AtomicShardWriter:
    """Write samples to `location` (a path or an object-storage URL) through a `Sink`; `close()` publishes the
    shard whole and leaves its `size` and `sha256`."""

    def __init__(self, location: storage.Location):
        import webdataset as wds

        self.path = storage.as_location(location)
        self._target = storage.Sink(self.path)
        self._tar = wds.TarWriter(self._target, user="vssflow", group="vssflow", mode=0o444, mtime=0.0,
                                  encoder=False)
        self.count = 0
        self.bytes = 0

    def write(self, members: dict[str, bytes]) -> None:
        self.bytes += self._tar.write(members)
        self.count += 1

    @property
    def size(self) -> int:
        return self._target.size

    @property
    def sha256(self) -> str:
        return self._target.sha256

    def close(self) -> storage.Location:
        self._tar.close()
        return self._target.commit()

    def abort(self) -> None:
        try:
            self._tar.close()   # writes the end-of-archive blocks: may fail again on a full disk
        except OSError:
            pass
        finally:
            self._target.abort()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """A raw WebDataset sample (member name -> bytes) -> meta dict, arrays and flac bytes."""
    if not CLIP_ID_PATTERN.fullmatch(str(sample["__key__"])):
        raise ValueError(f"tar member {sample['__key__']!r} is not a sample key: the shard was not written by this "
                         "pipeline (or names a path outside it)")
    meta = json.loads(sample["json"])
    arrays = {name: None for name in ARRAY_MEMBERS}
    for member in sorted(sample):
        if member.endswith(".npy"):   # the base members and any stream (K.lip.npy, K.lip_valid.npy, K.speaker.npy)
            arrays[member[:-len(".npy")]] = load_npy(sample[member])
    return {"key": sample["__key__"], "meta": meta, "arrays": arrays, "flac": sample.get("audio.flac")}


def iter_samples(shards: Iterable[str | os.PathLike]) -> Iterator[dict[str, Any]]:
    """Read shards with plain `webdataset`, in order, decoded by `decode_sample`. Object-storage URLs are opened
    through `manifests.storage` and handed to webdataset's own tar iterators."""
    import webdataset as wds

    urls = [str(s) for s in shards]
    if not urls:
        return
    if any(storage.is_url(u) for u in urls):
        for raw in raw_samples(urls):
            yield decode_sample(raw)
        return
    # nodesplitter=None: read every shard given, also inside a torch.distributed job (wds would refuse there)
    dataset = wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=None)
    for sample in dataset:
        yield decode_sample(sample)


def raw_samples(urls: Iterable[str], select_files=None) -> Iterator[dict[str, Any]]:
    """Raw samples (member suffix -> bytes, `__key__`, `__url__`) of shards at local paths or URLs, in order:
    webdataset's tar expander over streams opened by `manifests.storage`."""
    from webdataset import tariterators

    def streams():
        for url in urls:
            with storage.open_read(url) as stream:
                yield {"url": str(url), "stream": stream}

    files = tariterators.tar_file_expander(streams(), select_files=select_files)
    yield from tariterators.group_by_keys(files)


class ShardReader:
    """Random access to samples of tar shards (local or object storage) by key: one header scan per shard, then
    seeks (ranged reads on object storage).

    WebDataset streams shards front to back; mixing needs two arbitrary samples per output, so this reads
    the tar headers once (stdlib `tarfile`, nothing is extracted to disk) and keeps (offset, size) per member.
    """

    def __init__(self, max_shards: int = 64):
        self.max_shards = max_shards
        self._index: dict[str, dict[str, dict[str, tuple[int, int]]]] = {}

    def _members(self, shard: str) -> dict[str, dict[str, tuple[int, int]]]:
        import tarfile

        if shard not in self._index:
            if len(self._index) >= self.max_shards:
                self._index.pop(next(iter(self._index)))
            members: dict[str, dict[str, tuple[int, int]]] = {}
            with storage.open_read(shard) as f, tarfile.open(fileobj=f, mode="r:") as tar:
                for info in tar:
                    if "/" in info.name or info.name.startswith(".."):
                        raise ValueError(f"{shard} holds a member named {info.name!r}, outside any sample: it was "
                                         "not written by this pipeline")
                    if not info.isfile() or "." not in info.name:
                        continue
                    key, suffix = info.name.split(".", 1)
                    members.setdefault(key, {})[suffix] = (info.offset_data, info.size)
            self._index[shard] = members
        return self._index[shard]

    def read(self, shard: str | os.PathLike, key: str) -> dict[str, Any]:
        """The raw sample (member suffix -> bytes, plus `__key__`), as WebDataset would yield it."""
        shard = str(shard)
        members = self._members(shard).get(key)
        if members is None:
            raise KeyError(f"no sample {key!r} in {shard}")
        sample: dict[str, Any] = {"__key__": key}
        with storage.open_read(shard) as f:
            for suffix, (offset, size) in members.items():
                f.seek(offset)
                sample[suffix] = f.read(size)
        return sample
