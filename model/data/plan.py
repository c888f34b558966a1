"""The data-mix plan of a run: which folders, which samples of which shards, in which proportions, held out or not.

Opening. `open_datasets` reads every folder's `dataset.json`; all must share one feature contract (else a
ContractError naming the folders and the fields that differ). Each folder's `index.parquet` says which shard holds
which sample of which task, so the mixture is planned without reading a shard.

Sources. A `Source` is one stream of the mixture: the shards holding its samples, how many in each, and its weight.
Pretraining has one source per task (v2s, visual_tts, tts, joint), weighted by sample count by default or by
explicit weights; fine-tuning has "synthetic" (mixture folders) and "real_joint" (the joint clips of real folders),
weighted by `synthetic_ratio`. How a source is read is `model/data/stream.py`'s business.

Held-out set. Samples whose canonical split (`manifests.splits`) is valid or test are never trained on, whatever
their corpus calls them (index rows written before splits were canonical, "test-clean" or "dev-other", are mapped
the same way). The first `val_samples` of split `val_split` (by key; else of the other held-out split) give the
validation loss. Without any held-out sample, the first keys of each task are held out (at most a quarter of it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from manifests import storage
from manifests.errors import PipelineError
from manifests.splits import HELD_OUT_SPLITS, SPLITS, canonical_split
from manifests.tasks import TASKS
from stages.format.contract import FeatureContract, read_dataset_json, require_same
from stages.format.layout import NotAnOutput, OutputDir, shard_problem

INDEX_COLUMNS = ("key", "shard", "task", "split")


class DataError(PipelineError, ValueError):
    """Training data that cannot be used as asked (missing index, empty task, bad weights, shard/index mismatch)."""


def open_datasets(dirs: Sequence[str | Path]) -> FeatureContract:
    """The one feature contract shared by every folder; a ContractError names the folders and fields that differ."""
    if not dirs:
        raise DataError("no data folders given")
    paths = [resolved(d) for d in dirs]
    if len(set(map(str, paths))) != len(paths):
        raise DataError(f"a data folder is given twice: {[str(d) for d in dirs]}")
    return require_same([(str(p), read_dataset_json(p)[0]) for p in paths],
                        "Train only on folders extracted with the same config and models.")


def resolved(folder: str | Path) -> storage.Location:
    """A data folder as an absolute local path, or an object-storage URL as given (shards stream from it)."""
    location = storage.as_location(str(folder))
    return location if storage.is_url(location) else Path(location).resolve()


def read_index(dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Rows {url, key, task, split, sha256} of every folder's index.parquet; url is the shard's absolute path (or
    its object-storage URL) and sha256 the checksum its ledger recorded (None for outputs older than checksums).
    A shard outside its folder, missing, or of another size than recorded is a DataError naming it."""
    rows: list[dict[str, Any]] = []
    for d in dirs:
        folder = OutputDir(resolved(d))
        if not storage.exists(folder.index):
            raise DataError(f"{folder.index} not found: is {d} the output folder of an extract or synth-mix job?")
        table = folder.read_index()
        missing = [c for c in INDEX_COLUMNS if c not in table.column_names]
        if missing:
            raise DataError(f"{folder.index} lacks columns {missing}")
        recorded = {c: table[c].to_pylist() if c in table.column_names else [None] * table.num_rows
                    for c in ("shard_size", "shard_sha256")}
        table = table.select(list(INDEX_COLUMNS))
        shards: dict[str, tuple[str, Optional[str]]] = {}
        for i, row in enumerate(table.to_pylist()):
            if row["task"] not in TASKS:
                raise DataError(f"{folder.index}: sample {row['key']!r} has task {row['task']!r}, not one of {TASKS}")
            if row["shard"] not in shards:
                path = _shard_path(folder, row["shard"], recorded["shard_size"][i])
                shards[row["shard"]] = (str(path), recorded["shard_sha256"][i])
            url, sha256 = shards[row["shard"]]
            split = row["split"] if row["split"] in SPLITS or row["split"] is None else canonical_split(row["split"])
            rows.append({"url": url, "key": row["key"], "task": row["task"], "split": split, "sha256": sha256})
    return rows


def _shard_path(folder: OutputDir, shard: str, size: Optional[int]) -> storage.Location:
    """An index row's shard as an absolute path; one outside the folder, missing, or resized is a DataError."""
    try:
        path = folder.shard(shard)
    except NotAnOutput as e:
        raise DataError(str(e)) from None
    problem = shard_problem(path, size, None, checksum=False)
    if problem:
        raise DataError(f"{folder.index} names shard {shard!r}: {problem}. Re-run the job that wrote {folder.root} "
                        f"(with --verify) to repair it")
    return path


def held_out_rows(rows: Sequence[dict], *, val_split: Optional[str] = "test", val_samples: int = 16
                  ) -> tuple[list[dict], frozenset]:
    """(validation rows, every excluded (url, key)).

    All samples of the held-out splits (valid, test) are excluded from training; the first `val_samples` by key of
    split `val_split` validate (of the other held-out split when val_split has none). When no sample is held out
    by split, the first keys of each task are held out instead: val_samples spread over the tasks, at most a
    quarter of a task. val_samples == 0 validates on nothing, but still excludes the held-out splits.
    """
    held = sorted((r for r in rows if r["split"] in HELD_OUT_SPLITS), key=lambda r: (r["key"], r["url"]))
    if held:
        preferred = [r for r in held if r["split"] == val_split] or held
        return preferred[:max(val_samples, 0)], frozenset((r["url"], r["key"]) for r in held)
    if val_samples <= 0:
        return [], frozenset()
    by_task: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["key"], r["url"])):
        by_task.setdefault(r["task"], []).append(r)
    per_task = math.ceil(val_samples / max(len(by_task), 1))
    chosen = [r for task in sorted(by_task) for r in by_task[task][:min(per_task, len(by_task[task]) // 4)]]
    chosen = chosen[:val_samples]
    return chosen, frozenset((r["url"], r["key"]) for r in chosen)


@dataclass(frozen=True)
class Source:
    """One stream of the mixture: samples of `tasks` from `shards` (with `counts` of them in each), drawn with
    probability `weight` (weights of all sources sum to 1)."""

    name: str
    weight: float
    tasks: tuple[str, ...]
    shards: tuple[str, ...]
    counts: tuple[int, ...]

    @property
    def n_samples(self) -> int:
        return sum(self.counts)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "tasks": list(self.tasks), "shards": len(self.shards),
                "samples": self.n_samples}


def _source(name: str, weight: float, tasks: Iterable[str], rows: Iterable[dict]) -> Source:
    tasks = tuple(tasks)
    counts: dict[str, int] = {}
    for r in rows:
        if r["task"] in tasks:
            counts[r["url"]] = counts.get(r["url"], 0) + 1
    urls = tuple(sorted(counts))
    return Source(name, weight, tasks, urls, tuple(counts[u] for u in urls))


def _normalised(sources: list[Source]) -> list[Source]:
    total = sum(s.weight for s in sources)
    return [Source(s.name, s.weight / total, s.tasks, s.shards, s.counts) for s in sources]


def task_sources(rows: Sequence[dict], weights: Optional[dict[str, float]] = None) -> list[Source]:
    """One source per task. Default weights: each task's share of the samples. Explicit weights name tasks;
    a task left out of them is not trained on; a weighted task without samples is an error."""
    present = {r["task"] for r in rows}
    if weights is None:
        sources = [_source(t, sum(r["task"] == t for r in rows), (t,), rows) for t in TASKS if t in present]
    else:
        unknown = sorted(set(weights) - set(TASKS))
        if unknown:
            raise DataError(f"task_weights names unknown tasks {unknown}; tasks are {list(TASKS)}")
        bad = {t: w for t, w in weights.items() if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0)}
        if bad:
            raise DataError(f"task weights must be finite and >= 0, got {bad}")
        empty = sorted(t for t, w in weights.items() if w > 0 and t not in present)
        if empty:
            raise DataError(f"task_weights gives weight to {empty}, but the training data has no such samples "
                            f"(tasks present: {sorted(present)})")
        sources = [_source(t, float(weights[t]), (t,), rows) for t in TASKS if weights.get(t, 0) > 0]
    if not sources:
        raise DataError("nothing to train on: no training samples (or every task weight is 0)")
    return _normalised(sources)


def finetune_sources(mix_rows: Sequence[dict], real_rows: Sequence[dict], synthetic_ratio: float) -> list[Source]:
    """"synthetic": every sample of the mixture folders, weight synthetic_ratio; "real_joint": the joint samples of
    the real folders, weight 1 - synthetic_ratio. Without real folders the mixtures are the whole stream."""
    if not 0.0 <= synthetic_ratio <= 1.0:
        raise DataError(f"synthetic_ratio must be in [0, 1], got {synthetic_ratio}")
    sources = []
    if synthetic_ratio > 0 or not real_rows:
        if not mix_rows:
            raise DataError("the mixture folders hold no training samples")
        sources.append(_source("synthetic", synthetic_ratio if real_rows else 1.0, TASKS, mix_rows))
    if real_rows and synthetic_ratio < 1:
        joint = [r for r in real_rows if r["task"] == "joint"]
        if not joint:
            tasks = sorted({r["task"] for r in real_rows})
            raise DataError(f"the real joint folders hold no training samples of task 'joint' (found {tasks})")
        sources.append(_source("real_joint", 1.0 - synthetic_ratio, ("joint",), joint))
    return _normalised(sources)


@dataclass(frozen=True)
class TrainData:
    """What a run trains and validates on: the shared contract, the mixture's sources and the held-out samples."""

    contract: FeatureContract
    dirs: tuple[str, ...]
    sources: tuple[Source, ...]
    held_out: tuple[tuple[str, str], ...]     # (shard url, key) of the validation samples, in order
    exclude: frozenset                         # (shard url, key) never trained on
    checksums: dict = field(default_factory=dict)   # shard url -> sha256 its ledger recorded (verified on read)

    def describe(self) -> dict[str, Any]:
        return {"dirs": list(self.dirs), "feature_hash": self.contract.feature_hash,
                "sources": [s.to_dict() for s in self.sources], "held_out": [list(k) for k in self.held_out],
                "excluded": len(self.exclude)}


def plan_pretrain(dirs: Sequence[str | Path], *, task_weights: Optional[dict[str, float]] = None,
                  val_split: Optional[str] = "test", val_samples: int = 16) -> TrainData:
    contract = open_datasets(dirs)
    rows = read_index(dirs)
    val, exclude = held_out_rows(rows, val_split=val_split, val_samples=val_samples)
    train = [r for r in rows if (r["url"], r["key"]) not in exclude]
    return TrainData(contract, tuple(str(resolved(d)) for d in dirs), tuple(task_sources(train, task_weights)),
                     tuple((r["url"], r["key"]) for r in val), exclude, recorded_checksums(rows))


def plan_finetune(mix_dirs: Sequence[str | Path], real_joint_dirs: Sequence[str | Path], synthetic_ratio: float, *,
                  val_split: Optional[str] = "test", val_samples: int = 16) -> TrainData:
    dirs = [*mix_dirs, *real_joint_dirs]
    if not mix_dirs:
        raise DataError("fine-tuning needs at least one mixture folder (a synth-mix output)")
    contract = open_datasets(dirs)
    mix, real = read_index(mix_dirs), read_index(real_joint_dirs) if real_joint_dirs else []
    val, exclude = held_out_rows(mix + [r for r in real if r["task"] == "joint"], val_split=val_split,
                                 val_samples=val_samples)
    keep = lambda rs: [r for r in rs if (r["url"], r["key"]) not in exclude]  # noqa: E731
    sources = finetune_sources(keep(mix), keep(real), synthetic_ratio)
    return TrainData(contract, tuple(str(resolved(d)) for d in dirs), tuple(sources),
                     tuple((r["url"], r["key"]) for r in val), exclude, recorded_checksums(mix + real))


def recorded_checksums(rows: Sequence[dict]) -> dict[str, str]:
    return {r["url"]: r["sha256"] for r in rows if r.get("sha256")}


def describe_sources(sources: Sequence[Source]) -> str:
    """One line for a report: each source's name, weight, samples and shards."""
    return ", ".join(f"{s.name} {s.weight:.2f} ({s.n_samples} samples, {len(s.shards)} shards)" for s in sources)

