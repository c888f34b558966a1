"""Reading a job's output folder from Python: samples decoded, filtered through the index, fetched by key.

    import pipeline

    out = pipeline.open_output("shards/ljs")
    for sample in out.filter(task="tts", split="train"):
        sample.audio                 # float32 [N] at sample.sample_rate (16 kHz), K.audio.flac decoded by soundfile
        sample.arrays["mel"]         # float16 [T_m, 64]; every K.NAME.npy member is arrays[NAME]
        sample.meta["transcript"]    # K.json
    out["LJ001-0001"]                # one sample by key: index.parquet names its shard, the shard's tar headers
                                     # say where its members are (one header scan per shard, then seeks)

Nothing is copied or unpacked; a shard is checked against the size its ledger recorded before it is read (and its
checksum with `verify=True`), so a damaged shard is an error naming it, never a silently shorter dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests.errors import UsageError
from stages.format.contract import read_dataset_json
from stages.format.layout import DamagedShard, OutputDir, SampleNotFound, shard_problem
from stages.format.shard_io import ShardReader, load_npy


@dataclass(frozen=True)
class Sample:
    """One stored sample, decoded. `arrays` holds every `K.NAME.npy` member by NAME (video, mel, latent, phones and
    any stream a later contract adds); `extra` any other member's raw bytes."""

    key: str
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    audio: Optional[np.ndarray]            # float32 [N], None when the sample has no audio member
    sample_rate: Optional[int]
    shard: Path
    extra: dict[str, bytes] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.meta["task"]


def decode_members(key: str, members: dict[str, Any], shard: Path) -> Sample:
    """Raw members (suffix -> bytes, as WebDataset yields them) -> a Sample."""
    from stages.audio import decode_flac

    arrays, extra, meta, audio, rate = {}, {}, None, None, None
    for suffix, data in members.items():
        if suffix == "__key__":
            continue
        if suffix == "json":
            meta = json.loads(data)
        elif suffix.endswith(".npy"):
            arrays[suffix[: -len(".npy")]] = load_npy(data)
        elif suffix == "audio.flac":
            audio, rate = decode_flac(data)
        else:
            extra[suffix] = data
    if meta is None:
        raise DamagedShard(f"sample {key} in {shard} has no {key}.json member")
    return Sample(key=key, meta=meta, arrays=arrays, audio=audio, sample_rate=rate, shard=shard, extra=extra)


class Output:
    """An output folder (extract or synth-mix) as a sequence of samples; `filter` narrows it through the index."""

    def __init__(self, root: Union[str, Path], *, verify: bool = False, _index: Optional[pa.Table] = None,
                 _reader: Optional[ShardReader] = None):
        self.folder = OutputDir(Path(root))
        self.contract, self.dataset_json = read_dataset_json(self.folder.root)
        self.index = _index if _index is not None else self.folder.read_index()
        self.verify = verify
        self._reader = _reader or ShardReader()
        self._checked: dict[str, Path] = {}

    @property
    def root(self) -> Path:
        return self.folder.root

    @property
    def job(self) -> str:
        return self.dataset_json["job"]

    def __len__(self) -> int:
        return self.index.num_rows

    def __repr__(self) -> str:
        return f"Output({str(self.root)!r}, {len(self)} samples, job {self.job}, features {self.contract.feature_hash})"

    def keys(self) -> list[str]:
        return self.index["key"].to_pylist()

    def __contains__(self, key: object) -> bool:
        return bool(pc.any(pc.equal(self.index["key"], key)).as_py()) if len(self) else False

    def filter(self, expression: Optional[pc.Expression] = None, **columns: Any) -> "Output":
        """The samples whose index row matches: `task="tts"`, `split=["train", "valid"]`, `dataset=None` (null),
        any index column; and an optional pyarrow expression, e.g. `pc.field("duration_s") > 2`."""
        unknown = sorted(set(columns) - set(self.index.column_names))
        if unknown:
            raise UsageError(f"{self.folder.index} has no column(s) {unknown}; its columns: "
                             f"{', '.join(self.index.column_names)}")
        table = self.index
        for name, wanted in columns.items():
            values = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
            column = table[name]
            keep = pc.is_in(column, value_set=pa.array([v for v in values if v is not None], column.type))
            if None in values:
                keep = pc.or_kleene(keep, pc.is_null(column))
            table = table.filter(keep)
        if expression is not None:
            table = table.filter(expression)
        return Output(self.root, verify=self.verify, _index=table, _reader=self._reader)

    def __iter__(self) -> Iterator[Sample]:
        """Samples in index order (shard by shard, in each shard in the order they were written)."""
        for row in self.index.select(["key", "shard"]).to_pylist():
            yield self._read(row["key"], row["shard"])

    def __getitem__(self, which: Union[str, int]) -> Sample:
        """A sample by key, or by position in this (filtered) view."""
        if isinstance(which, (int, np.integer)):
            if not -len(self) <= which < len(self):
                raise IndexError(f"sample {which} of {len(self)}")
            row = self.index.slice(int(which) % len(self), 1).select(["key", "shard"]).to_pylist()[0]
            return self._read(row["key"], row["shard"])
        match = self.index.filter(pc.equal(self.index["key"], which))
        if match.num_rows == 0:
            raise SampleNotFound(f"no sample {which!r} in {self.root}" + ("" if len(self) == self._total() else
                                                                              " (in this filtered view)"))
        return self._read(which, match["shard"][0].as_py())

    def shards(self) -> list[Path]:
        """The shard files this view's samples lie in, in index order."""
        return [self.folder.shard(s) for s in dict.fromkeys(self.index["shard"].to_pylist())]

    def _total(self) -> int:
        return pq.read_metadata(self.folder.index).num_rows

    def _shard_path(self, shard: str) -> Path:
        """The shard's path, once checked against the size (and with verify, the checksum) its ledger recorded."""
        if shard not in self._checked:
            path = self.folder.shard(shard)
            row = self.index.filter(pc.equal(self.index["shard"], shard)).slice(0, 1).to_pylist()[0]
            problem = shard_problem(path, row.get("shard_size"), row.get("shard_sha256"), checksum=self.verify)
            if problem:
                raise DamagedShard(f"shard {path} is damaged: {problem}. Re-run the job that wrote {self.root} "
                                   "to redo it")
            self._checked[shard] = path
        return self._checked[shard]

    def _read(self, key: str, shard: str) -> Sample:
        path = self._shard_path(shard)
        try:
            members = self._reader.read(path, key)
        except KeyError:
            raise DamagedShard(f"{key} is listed in {self.folder.index} but not found in {path}") from None
        return decode_members(key, members, path)


def open_output(root: Union[str, Path], *, verify: bool = False) -> Output:
    """An extract or synth-mix output folder, read: `len`, iteration, `filter(...)`, `out[key]`, `out[i]`.
    `verify` re-reads each shard's checksum before its first sample is read (sizes are always compared)."""
    return Output(root, verify=verify)


__all__ = ["Output", "Sample", "open_output"]
