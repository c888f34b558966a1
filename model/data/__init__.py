"""Training data: a seeded, resumable, task-mixed stream of padded batches read from WebDataset shards.

Opening. `open_datasets` reads every folder's `dataset.json`; all must share one `feature_hash` (else a
ContractError naming the folders and the fields that differ). Each folder's `index.parquet` says which shard holds
which sample of which task, so the mixture is planned without reading a shard.

Sources. A `Source` is one stream of the mixture: the shards holding its samples, how many in each, and its weight.
Pretraining has one source per task (v2s, visual_tts, tts, joint), weighted by sample count by default or by
explicit weights; fine-tuning has "synthetic" (mixture folders) and "real_joint" (the joint clips of real folders),
weighted by `synthetic_ratio`. Within a source every sample is equally likely: shards are drawn with replacement
with probability proportional to their count of that source's samples (webdataset's own resampler draws shards
uniformly and, through `WebDataset(resampled=True)`, unseeded), read with `webdataset.tarfile_to_samples`, filtered
to the source's tasks, and shuffled in a buffer (`webdataset.shuffle`). A shard that yields a different number of
samples than its index row promises is an error, as is any sample that fails `check_sample`: fail loudly.

Held-out set. Samples of split `val_split` ("test") are never trained on; the first `val_samples` of them (by key)
give the validation loss. Without such a split, the first keys of each task are held out (at most a quarter of it).

Memory. Each loader worker keeps a shuffle buffer of `shuffle_buffer` raw samples (features, no FLAC) per source:
about 4 x 128 x 0.45 MB for 10-second clips.

Determinism and resume. Every random choice (shard draws, shuffle buffer, task mix, crops, latent sampling) comes
from a generator seeded by (seed, epoch, rank, loader worker, purpose), the per-sample ones by the sample's index in
its worker's stream. The stream is cut into epochs of `epoch_steps` batches: each epoch starts a fresh loader whose
workers are seeded by the epoch, and a run resumed at batch p starts epoch p // epoch_steps and skips the
p % epoch_steps batches it already saw *before decoding* (raw tar bytes only). DataLoader workers hand out batches
round-robin, so stream w of W made batches w, w + W, ... and knows how many to skip; a resumed loader, whose
first batch comes from its worker 0, lets worker i play stream (i + skipped) mod W. The stream therefore depends on
(seed, num_workers, rank, world size, batch size), not on timing; a resumed run with the same values sees exactly the
batches an uninterrupted run would have seen. With resampling, any number of workers can read any number of shards
(one shard and four workers is fine: every worker draws from all shards with its own seed).

Audio representation. "mel": the shard's log-mel [T_m, 64] at 100/s patched 4 frames at a time to [T_m // 4, 256]
at 25/s (`model.batch.patch_mel`). "latent": the VAE posterior [T_l, 2C] at 25/s, either sampled
(mean + exp(logvar / 2) * eps, the default: the model sees the posterior's spread, as a VAE-based diffusion model
does) or its mean (`latent_sample=False`, deterministic). Either way the values are standardised with one scalar
mean and std (`audio_mean`, `audio_std`, estimated from the training data by `estimate_audio_norm` and stored in the
checkpoint), so the flow starts from N(0, I) noise at the data's scale.

Crops. A clip longer than the model's window (max_video_frames / video_fps seconds) is cut to a random window that
starts on a frame of both timelines (multiples of 0.2 s at 25/s and 10/s); its phoneme track is stretched over the
whole speech span first and then cut, so the visible phones are the ones spoken in the window.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from manifests.tasks import TASKS
from model.batch import collate, patch_mel, span_frames, stretch_phones
from stages.format.contract import ContractError, FeatureContract, check_sample, read_dataset_json
from stages.format.rates import MEL_PER_AUDIO_FRAME
from stages.format.shard_io import decode_sample

AUDIO_REPRS = ("mel", "latent")
INDEX_COLUMNS = ("key", "shard", "task", "split")
# purposes of the seeds derived by seed_of (fixed numbers: changing one changes every stream)
_SHARDS, _SHUFFLE, _MIX, _SAMPLE, _VALID = range(5)


class DataError(ValueError):
    """Training data that cannot be used as asked (missing index, empty task, bad weights, shard/index mismatch)."""


def seed_of(*parts: int) -> int:
    """A 32-bit seed from integers (numpy SeedSequence: well mixed, the same on every machine and Python)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


# ----------------------------------------------------------------------------------------------------------------------
# Opening folders and planning the mixture


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def contract_differences(a: FeatureContract, b: FeatureContract) -> list[str]:
    """Dotted fields whose values differ, e.g. "video_encoder.dim: 32 != 768"."""
    fa, fb = _flat(a.identity()), _flat(b.identity())
    return [f"{k}: {fa.get(k)!r} != {fb.get(k)!r}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def open_datasets(dirs: Sequence[str | Path]) -> FeatureContract:
    """The one feature contract shared by every folder; a ContractError names the folders and fields that differ."""
    if not dirs:
        raise DataError("no data folders given")
    paths = [Path(d) for d in dirs]
    if len({p.resolve() for p in paths}) != len(paths):
        raise DataError(f"a data folder is given twice: {[str(p) for p in paths]}")
    first_dir, first = paths[0], read_dataset_json(paths[0])[0]
    for path in paths[1:]:
        contract = read_dataset_json(path)[0]
        if contract.feature_hash != first.feature_hash:
            diff = contract_differences(first, contract)
            raise ContractError(
                f"{first_dir} and {path} hold different features (feature_hash {first.feature_hash} != "
                f"{contract.feature_hash}); differing fields: {'; '.join(diff[:8])}"
                + (f" (and {len(diff) - 8} more)" if len(diff) > 8 else "")
                + ". Train only on folders extracted with the same config and models.")
    return first


def read_index(dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Rows {url, key, task, split} of every folder's index.parquet; url is the shard's absolute path."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for d in dirs:
        root = Path(d).resolve()
        path = root / "index.parquet"
        if not path.is_file():
            raise DataError(f"{path} not found: is {d} the output folder of an extract or synth-mix job?")
        table = pq.read_table(path)
        missing = [c for c in INDEX_COLUMNS if c not in table.column_names]
        if missing:
            raise DataError(f"{path} lacks columns {missing}")
        table = table.select(list(INDEX_COLUMNS))
        shards: dict[str, str] = {}
        for shard in table.column("shard").unique().to_pylist():
            url = (root / shard).resolve()
            if not url.is_relative_to(root):
                raise DataError(f"{path}: shard {shard!r} lies outside {root}")
            if not url.is_file():
                raise DataError(f"{path} names shard {shard!r}, which does not exist")
            shards[shard] = str(url)
        for row in table.to_pylist():
            if row["task"] not in TASKS:
                raise DataError(f"{path}: sample {row['key']!r} has task {row['task']!r}, not one of {TASKS}")
            rows.append({"url": shards[row["shard"]], "key": row["key"], "task": row["task"], "split": row["split"]})
    return rows


def held_out_rows(rows: Sequence[dict], *, val_split: Optional[str] = "test", val_samples: int = 16
                  ) -> tuple[list[dict], frozenset]:
    """(validation rows, every excluded (url, key)).

    All samples of split `val_split` are excluded from training; the first `val_samples` by key validate. When no
    sample has that split, the first keys of each task are held out instead: val_samples spread over the tasks,
    at most a quarter of a task. val_samples == 0 holds nothing out and excludes nothing.
    """
    if val_samples <= 0:
        return [], frozenset()
    split_rows = sorted((r for r in rows if val_split is not None and r["split"] == val_split),
                        key=lambda r: (r["key"], r["url"]))
    if split_rows:
        return split_rows[:val_samples], frozenset((r["url"], r["key"]) for r in split_rows)
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
    return TrainData(contract, tuple(str(Path(d).resolve()) for d in dirs), tuple(task_sources(train, task_weights)),
                     tuple((r["url"], r["key"]) for r in val), exclude)


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
    return TrainData(contract, tuple(str(Path(d).resolve()) for d in dirs), tuple(sources),
                     tuple((r["url"], r["key"]) for r in val), exclude)


# ----------------------------------------------------------------------------------------------------------------------
# One sample: contract check, audio representation, crop, normalisation


@dataclass(frozen=True, kw_only=True)
class SamplePrep:
    """Decoded shard sample -> the dict `model.batch.collate` takes (plus "key", and "phones_track" when cropped)."""

    contract: FeatureContract
    audio_repr: str = "mel"
    latent_sample: bool = True
    audio_mean: float = 0.0
    audio_std: float = 1.0
    max_audio_frames: int = 250
    max_video_frames: int = 100
    audio_fps: float = 25.0

    def __post_init__(self) -> None:
        if self.audio_repr not in AUDIO_REPRS:
            raise ValueError(f"audio_repr must be one of {AUDIO_REPRS}, got {self.audio_repr!r}")
        if self.audio_repr == "latent" and not self.contract.latent:
            raise ContractError("audio_repr 'latent' needs shards with VAE latents; these were extracted without "
                                "(re-extract with --vae, or train on 'mel')")
        if not self.audio_std > 0:
            raise ValueError(f"audio_std must be > 0, got {self.audio_std}")
        for name, fps in (("audio_fps", self.audio_fps), ("video_fps", self.contract.video_fps)):
            if float(fps) != int(fps):
                raise ValueError(f"{name} {fps} must be a whole number of frames per second")

    @property
    def audio_dim(self) -> int:
        if self.audio_repr == "mel":
            return MEL_PER_AUDIO_FRAME * self.contract.n_mels
        return int(self.contract.latent["channels"])

    def check(self, decoded: dict[str, Any], where: str = "") -> None:
        problems = check_sample(decoded["meta"], decoded["arrays"], self.contract)
        if problems:
            raise ContractError(f"{where}sample {decoded['key']!r} does not honour dataset.json: {'; '.join(problems)}")

    def raw_audio(self, arrays: dict[str, Any], rng: Optional[np.random.Generator]) -> np.ndarray:
        """[T, A] float32 at audio_fps, not standardised; latents sampled with rng (None: the posterior mean)."""
        if self.audio_repr == "mel":
            return patch_mel(arrays["mel"], self.contract.n_mels).numpy()            # [T_m // 4, 256]
        latent = arrays["latent"].astype(np.float32)                                 # [T_l, 2C]
        mean, logvar = np.split(latent, 2, axis=1)                                   # [T_l, C] each
        if rng is None or not self.latent_sample:
            return mean
        return (mean + np.exp(0.5 * logvar) * rng.standard_normal(mean.shape, dtype=np.float32)).astype(np.float32)

    def __call__(self, decoded: dict[str, Any], rng: np.random.Generator, where: str = "") -> dict[str, Any]:
        self.check(decoded, where)
        meta, arrays = decoded["meta"], decoded["arrays"]
        audio = (self.raw_audio(arrays, rng) - self.audio_mean) / self.audio_std     # [T, A]
        video = arrays["video"]                                                      # [T_v, D] float16 or None
        sample = {"key": decoded["key"], "task": meta["task"], "audio": audio.astype(np.float32), "video": video,
                  "phone_ids": arrays["phones"], "speech_span_s": meta.get("speech_span_s")}
        return self.crop(sample, rng)

    def crop(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        audio, video = sample["audio"], sample["video"]
        n_audio, n_video = len(audio), 0 if video is None else len(video)
        if n_audio <= self.max_audio_frames and n_video <= self.max_video_frames:
            return sample
        video_fps = self.contract.video_fps
        unit = math.gcd(int(self.audio_fps), int(video_fps))          # crop starts every 1/unit s (0.2 s)
        unit_audio, unit_video = int(self.audio_fps) // unit, int(video_fps) // unit
        window_s = min(self.max_audio_frames / self.audio_fps, self.max_video_frames / video_fps)
        keep_audio = min(n_audio, int(window_s * self.audio_fps))
        k = int(rng.integers(0, max(0, (n_audio - keep_audio) // unit_audio) + 1))
        a0, v0 = k * unit_audio, k * unit_video
        out = dict(sample, audio=audio[a0:a0 + keep_audio], phone_ids=None, speech_span_s=None)
        if video is not None:
            out["video"] = video[v0:v0 + int(window_s * video_fps)]
        if sample["phone_ids"] is not None:
            span = sample["speech_span_s"]
            start, end = (0, n_audio) if span is None else span_frames(span, self.audio_fps)
            track = stretch_phones(sample["phone_ids"], n_audio, start, end)            # [n_audio]
            out["phones_track"] = track[a0:a0 + keep_audio]
        return out


def make_batch(samples: Sequence[dict[str, Any]], video_dim: int, audio_fps: float = 25.0) -> dict[str, Any]:
    """`model.batch.collate`, then the phone tracks of cropped samples (made before the crop) and the keys."""
    batch = collate(samples, audio_fps=audio_fps, video_dim=video_dim)
    for i, s in enumerate(samples):
        if s.get("phones_track") is not None:
            batch["phones_track"][i, : len(s["phones_track"])] = s["phones_track"]
    batch["key"] = [s["key"] for s in samples]
    return batch


# ----------------------------------------------------------------------------------------------------------------------
# The stream


def _not_audio(name: str) -> bool:
    return not name.endswith(".flac")


def _shard_samples(url: str) -> Iterator[dict[str, Any]]:
    """Raw samples of one shard, in order, without the FLAC (training reads features only: less I/O and memory in
    the shuffle buffers). Not `stages.shard_io.iter_samples`: its WebDataset refuses to run under
    torch.distributed without a node splitter, and every rank here reads shards on its own terms."""
    import webdataset as wds

    return wds.tarfile_to_samples(select_files=_not_audio)(iter([{"url": url}]))


def shard_samples(url: str) -> Iterator[dict[str, Any]]:
    """Decoded samples (`stages.shard_io.decode_sample`) of one shard, in order."""
    return (decode_sample(raw) for raw in _shard_samples(url))


def source_samples(source: Source, exclude: frozenset, seed: int) -> Iterator[dict[str, Any]]:
    """Raw samples of one source, forever: shards drawn with replacement in proportion to their counts."""
    rng = random.Random(seed)
    cum = list(np.cumsum(source.counts))
    expected_of = dict(zip(source.shards, source.counts))
    tasks = frozenset(source.tasks)
    while True:
        url = rng.choices(source.shards, cum_weights=cum)[0]
        expected = expected_of[url]
        found = 0
        for raw in _shard_samples(url):
            if (url, raw["__key__"]) in exclude or json.loads(raw["json"]).get("task") not in tasks:
                continue
            found += 1
            yield raw
        if found != expected:
            raise DataError(f"{url} holds {found} samples of {sorted(tasks)} but its index.parquet says {expected}: "
                            f"the shard and its index disagree (re-run the job that wrote them)")


def batches_made_by(worker: int, num_workers: int, batches: int) -> int:
    """How many of the first `batches` batches worker `worker` made (DataLoader deals them out round-robin)."""
    return len(range(worker, batches, num_workers))


class TrainStream(torch.utils.data.IterableDataset):
    """One epoch of padded training batches, infinite; seeded by (seed, epoch, rank, worker)."""

    def __init__(self, data: TrainData, prep: SamplePrep, *, batch_size: int, seed: int, epoch: int = 0,
                 skip_batches: int = 0, shuffle_buffer: int = 128, rank: int = 0):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.prep = data, prep
        self.batch_size, self.seed, self.epoch, self.skip_batches = batch_size, seed, epoch, skip_batches
        self.shuffle_buffer, self.rank = shuffle_buffer, rank

    def raw_samples(self, worker: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """(index in this worker's stream, raw sample): the sources mixed by their weights."""
        import webdataset as wds

        base = (self.seed, self.epoch, self.rank, worker)
        streams = []
        for i, source in enumerate(self.data.sources):
            shuffle = wds.shuffle(self.shuffle_buffer, initial=min(self.shuffle_buffer, 32),
                                  seed=seed_of(*base, _SHUFFLE, i))
            streams.append(iter(shuffle(source_samples(source, self.data.exclude, seed_of(*base, _SHARDS, i)))))
        rng = random.Random(seed_of(*base, _MIX))
        cum = list(np.cumsum([s.weight for s in self.data.sources]))
        indices = range(len(streams))
        index = 0
        while True:
            yield index, next(streams[rng.choices(indices, cum_weights=cum)[0]])
            index += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        num_workers = 1 if info is None else info.num_workers
        # a fresh DataLoader asks worker 0 first; when resuming after k batches, the next batch is stream
        # (k mod W)'s, so loader worker i plays stream (i + k) mod W
        worker = (0 if info is None else info.id + self.skip_batches) % num_workers
        skip = batches_made_by(worker, num_workers, self.skip_batches) * self.batch_size
        base = (self.seed, self.epoch, self.rank, worker)
        batch: list[dict[str, Any]] = []
        for index, raw in self.raw_samples(worker):
            if index < skip:
                continue
            decoded = decode_sample(raw)
            batch.append(self.prep(decoded, np.random.default_rng(seed_of(*base, _SAMPLE, index)),
                                   where=f"{raw.get('__url__')}: "))
            if len(batch) == self.batch_size:
                yield make_batch(batch, self.data.contract.video_dim, self.prep.audio_fps)
                batch = []


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)   # workers only decode and pad; the trainer's threads stay free


class TrainLoader:
    """Batches for steps position, position + 1, ...: epochs of `epoch_steps` batches, each from a fresh
    `webdataset.WebLoader` over a `TrainStream` seeded by its epoch (see the module docstring)."""

    def __init__(self, data: TrainData, prep: SamplePrep, *, batch_size: int, seed: int, num_workers: int = 2,
                 epoch_steps: int = 1000, shuffle_buffer: int = 128, rank: int = 0, prefetch_factor: int = 2):
        if epoch_steps < 1:
            raise ValueError(f"epoch_steps must be >= 1, got {epoch_steps}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.data, self.prep = data, prep
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.epoch_steps, self.shuffle_buffer, self.rank = epoch_steps, shuffle_buffer, rank
        self.prefetch_factor = prefetch_factor

    def stream(self, epoch: int, skip_batches: int = 0) -> TrainStream:
        return TrainStream(self.data, self.prep, batch_size=self.batch_size, seed=self.seed, epoch=epoch,
                           skip_batches=skip_batches, shuffle_buffer=self.shuffle_buffer, rank=self.rank)

    def batches(self, position: int = 0) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        epoch, within = divmod(position, self.epoch_steps)
        while True:
            extra = {"prefetch_factor": self.prefetch_factor, "worker_init_fn": _worker_init} if self.num_workers \
                else {}
            loader = wds.WebLoader(self.stream(epoch, within), batch_size=None, num_workers=self.num_workers, **extra)
            iterator = iter(loader)
            try:
                for _ in range(self.epoch_steps - within):
                    yield next(iterator)
            finally:
                del iterator   # stops this epoch's workers
            epoch, within = epoch + 1, 0


# ----------------------------------------------------------------------------------------------------------------------
# Fixed samples: validation, normalisation statistics


def load_samples(keys: Sequence[tuple[str, str]], prep: SamplePrep, seed: int = 0) -> list[dict[str, Any]]:
    """The prepared samples (url, key), in the given order; crops and latent draws seeded by (seed, position)."""
    wanted = {k: i for i, k in enumerate(keys)}
    found: dict[int, dict[str, Any]] = {}
    urls = sorted({url for url, _ in keys})
    for url in urls:
        for decoded in shard_samples(url):
            i = wanted.get((url, decoded["key"]))
            if i is not None:
                found[i] = prep(decoded, np.random.default_rng(seed_of(seed, _VALID, i)), where=f"{url}: ")
    missing = [keys[i] for i in range(len(keys)) if i not in found]
    if missing:
        raise DataError(f"held-out samples not found in their shards: {missing[:5]}")
    return [found[i] for i in range(len(keys))]


def fixed_batches(samples: Sequence[dict[str, Any]], batch_size: int, video_dim: int,
                  audio_fps: float = 25.0) -> list[dict[str, Any]]:
    return [make_batch(samples[i:i + batch_size], video_dim, audio_fps) for i in range(0, len(samples), batch_size)]


def estimate_audio_norm(data: TrainData, audio_repr: str, max_samples: int = 256) -> tuple[float, float]:
    """Scalar mean and std of the training audio (latent means for "latent"), from the first samples of each source
    in shard order: deterministic, and cheap (reading stops after max_samples)."""
    prep = SamplePrep(contract=data.contract, audio_repr=audio_repr)
    total = total_sq = count = 0.0
    per_source = max(1, max_samples // len(data.sources))
    for source in data.sources:
        taken = 0
        tasks = frozenset(source.tasks)
        for url in source.shards:
            for decoded in shard_samples(url):
                if taken >= per_source:
                    break
                if decoded["meta"]["task"] not in tasks or (url, decoded["key"]) in data.exclude:
                    continue
                prep.check(decoded, where=f"{url}: ")
                audio = prep.raw_audio(decoded["arrays"], None).astype(np.float64)
                total, total_sq, count = total + audio.sum(), total_sq + np.square(audio).sum(), count + audio.size
                taken += 1
            if taken >= per_source:
                break
    if count == 0:
        raise DataError("no training audio to estimate the normalisation from")
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
    if not std > 1e-6:
        raise DataError(f"the training audio is constant (std {std:.3g}); cannot standardise it")
    return float(mean), float(std)


def describe_sources(sources: Sequence[Source]) -> str:
    return ", ".join(f"{s.name} {s.weight:.2f} ({s.n_samples} samples, {len(s.shards)} shards)" for s in sources)

