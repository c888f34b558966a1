"""The training stream: a seeded, resumable, task-mixed stream of padded batches read from WebDataset shards.

Reading a source. Within a source (model/data/plan.py) every sample is equally likely: shards are drawn with
replacement with probability proportional to their count of that source's samples (webdataset's own resampler draws
shards uniformly and, through `WebDataset(resampled=True)`, unseeded), read with `webdataset.tarfile_to_samples`,
filtered to the source's tasks, and shuffled in a buffer (`webdataset.shuffle`). A shard that yields a different
number of samples than its index row promises is an error, as is any sample that fails `check_sample`: fail loudly.

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

Fixed samples. The validation batches and the audio normalisation statistics are read in index order, not drawn.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from manifests.schema import CLIP_ID_PATTERN
from model.data.plan import DataError, Source, TrainData
from model.data.prep import SamplePrep, make_batch
from stages.format.layout import file_checksum
from stages.format.shard_io import decode_sample, raw_samples

# purposes of the seeds derived by seed_of (fixed numbers: changing one changes every stream)
_SHARDS, _SHUFFLE, _MIX, _SAMPLE, _VALID = range(5)


def seed_of(*parts: int) -> int:
    """A 32-bit seed from integers (numpy SeedSequence: well mixed, the same on every machine and Python)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def _not_audio(name: str) -> bool:
    return not name.endswith(".flac")


_verified: set[str] = set()   # shards whose checksum this process has checked (once per process, not per epoch)


def verify_shard(url: str, sha256: Optional[str]) -> None:
    """A DataError naming the shard when its bytes are not the ones its ledger recorded (flipped or truncated);
    checked before any of its samples is used. Shards from outputs older than checksums are not checked."""
    if sha256 is None or url in _verified:
        return
    if file_checksum(url) != sha256:
        raise DataError(f"shard {url} is damaged: its checksum differs from the one recorded when it was written. "
                        f"Run `pipeline status --verify` on its folder and re-run the job that wrote it")
    _verified.add(url)


def _shard_samples(url: str, sha256: Optional[str] = None) -> Iterator[dict[str, Any]]:
    """Raw samples of one shard, in order, without the FLAC (training reads features only: less I/O and memory in
    the shuffle buffers). Not `stages.format.shard_io.iter_samples`: its WebDataset refuses to run under
    torch.distributed without a node splitter, and every rank here reads shards on its own terms. Shards at
    object-storage URLs stream through `manifests.storage` into webdataset's tar iterator."""
    import tarfile

    verify_shard(url, sha256)
    try:
        for raw in raw_samples([url], select_files=_not_audio):
            if not CLIP_ID_PATTERN.fullmatch(raw["__key__"]):
                raise DataError(f"shard {url} holds a member named {raw['__key__']!r}, not a sample key: "
                                "it was not written by this pipeline")
            yield raw
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"shard {url} cannot be read ({type(e).__name__}: {e}): it is damaged or truncated; "
                        "re-run the job that wrote it") from None


def shard_samples(url: str, sha256: Optional[str] = None) -> Iterator[dict[str, Any]]:
    """Decoded samples (`stages.format.shard_io.decode_sample`) of one shard, in order."""
    return (decode_sample(raw) for raw in _shard_samples(url, sha256))


def source_samples(source: Source, exclude: frozenset, seed: int,
                   checksums: Optional[dict[str, str]] = None) -> Iterator[dict[str, Any]]:
    """Raw samples of one source, forever: shards drawn with replacement in proportion to their counts."""
    rng = random.Random(seed)
    cum = list(np.cumsum(source.counts))
    expected_of = dict(zip(source.shards, source.counts))
    tasks = frozenset(source.tasks)
    while True:
        url = rng.choices(source.shards, cum_weights=cum)[0]
        expected = expected_of[url]
        found = 0
        for raw in _shard_samples(url, (checksums or {}).get(url)):
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
            streams.append(iter(shuffle(source_samples(source, self.data.exclude, seed_of(*base, _SHARDS, i),
                                                                 self.data.checksums))))
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
                yield make_batch(batch, self.prep)
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


def load_samples(keys: Sequence[tuple[str, str]], prep: SamplePrep, seed: int = 0,
                 checksums: Optional[dict[str, str]] = None) -> list[dict[str, Any]]:
    """The prepared samples (url, key), in the given order; crops and latent draws seeded by (seed, position)."""
    wanted = {k: i for i, k in enumerate(keys)}
    found: dict[int, dict[str, Any]] = {}
    urls = sorted({url for url, _ in keys})
    for url in urls:
        for decoded in shard_samples(url, (checksums or {}).get(url)):
            i = wanted.get((url, decoded["key"]))
            if i is not None:
                found[i] = prep(decoded, np.random.default_rng(seed_of(seed, _VALID, i)), where=f"{url}: ")
    missing = [keys[i] for i in range(len(keys)) if i not in found]
    if missing:
        raise DataError(f"held-out samples not found in their shards: {missing[:5]}")
    return [found[i] for i in range(len(keys))]


def fixed_batches(samples: Sequence[dict[str, Any]], batch_size: int, prep: SamplePrep) -> list[dict[str, Any]]:
    """The samples, in order, as padded batches of at most batch_size."""
    return [make_batch(samples[i:i + batch_size], prep) for i in range(0, len(samples), batch_size)]


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
            for decoded in shard_samples(url, data.checksums.get(url)):
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
