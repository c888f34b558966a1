"""Helpers shared by the model tests: a tiny network and hand-made batches, and copies of an extract output."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from model.batch import collate
from model.config import preset
from model.data import SamplePrep
from model.dit import VSSFlowDiT
from model.train_config import TrainConfig
from stages.format.contract import read_dataset_json, write_dataset_json
from stages.format.shard_io import AtomicShardWriter, iter_samples, sample_members

VIDEO_DIM, VOCAB = 32, 20


# ------------------------------------------------------------------------------------------------ networks and batches


def tiny_model(seed: int = 0, randomize_output: bool = False, **overrides) -> VSSFlowDiT:
    torch.manual_seed(seed)
    model = VSSFlowDiT(preset("tiny", video_dim=VIDEO_DIM, phone_vocab_size=VOCAB, **overrides)).eval()
    if randomize_output:  # the zero-initialised output layer hides everything upstream
        torch.nn.init.normal_(model.out_proj.weight, std=0.5)
    return model


def mixed_samples(seed: int = 0, audio_dim: int = 256) -> list[dict]:
    """v2s (video, no text), tts (text, no video), visual_tts (both, shorter: padded), all at different lengths."""
    g = np.random.default_rng(seed)
    return [
        {"task": "v2s", "audio": g.standard_normal((20, audio_dim)).astype(np.float16),
         "video": g.standard_normal((8, VIDEO_DIM)).astype(np.float16)},
        {"task": "tts", "audio": g.standard_normal((16, audio_dim)).astype(np.float16),
         "phone_ids": np.arange(1, 9, dtype=np.int16), "speech_span_s": (0.1, 0.5)},
        {"task": "visual_tts", "audio": g.standard_normal((12, audio_dim)).astype(np.float16),
         "video": g.standard_normal((5, VIDEO_DIM)).astype(np.float16),
         "phone_ids": np.array([3, 4, 5], dtype=np.int16), "speech_span_s": None},
    ]


def mixed_batch(seed: int = 0) -> dict:
    return collate(mixed_samples(seed))


def model_inputs(batch: dict, t: torch.Tensor | None = None) -> dict:
    B = batch["x1"].shape[0]
    return {"x_t": torch.randn(batch["x1"].shape, generator=torch.Generator().manual_seed(1)),
            "t": torch.full((B,), 0.3) if t is None else t,
            "phones_track": batch["phones_track"], "video": batch["video"], "video_mask": batch["video_mask"],
            "audio_mask": batch["audio_mask"]}



# ---------------------------------------------------------------------------------------------------- training folders


def tiny(**overrides) -> TrainConfig:
    base = dict(preset="tiny", batch_size=4, steps=4, warmup_steps=5, lr=1e-3, num_workers=0, log_every=1,
                eval_every=1000, save_every=1000, deterministic=True, ema=False, val_samples=4)
    return TrainConfig(**{**base, **overrides})


def copy_output(src: Path, dst: Path, *, shards=None, edit_contract=None) -> Path:
    """A copy of an extract output (only the given shards), optionally under an edited feature contract."""
    (dst / "shards").mkdir(parents=True)
    table = pq.read_table(src / "index.parquet")
    if shards is not None:
        table = table.filter(pc.is_in(table["shard"], value_set=pa.array(sorted(shards))))
    for shard in set(table["shard"].to_pylist()):
        shutil.copy(src / shard, dst / shard)
    pq.write_table(table, dst / "index.parquet")
    contract, doc = read_dataset_json(src)
    if edit_contract is not None:
        contract = edit_contract(contract)
    write_dataset_json(dst, contract, job=doc["job"], config=doc["config"])
    return dst


def index_rows(out: Path) -> list[dict]:
    return pq.read_table(out / "index.parquet").to_pylist()


def prep_for(data, **kw) -> SamplePrep:
    return SamplePrep(contract=data.contract, audio_mean=-6.0, audio_std=2.3, **kw)


def write_shard_with(out: Path, dst: Path, change) -> Path:
    """A one-shard output whose second sample is changed by `change(arrays)`; its index lists both samples."""
    src = out / "shards" / "extract-000000.tar"
    samples = list(iter_samples([src]))[:2]
    (dst / "shards").mkdir(parents=True)
    with AtomicShardWriter(dst / "shards" / "bad-000000.tar") as writer:
        for i, s in enumerate(samples):
            arrays = dict(s["arrays"])
            if i == 1:
                change(arrays)
            writer.write(sample_members(s["key"], s["meta"], arrays, s["flac"]))
    rows = [{"key": s["key"], "shard": "shards/bad-000000.tar", "task": s["meta"]["task"], "split": "train"}
            for s in samples]
    pq.write_table(pa.Table.from_pylist(rows), dst / "index.parquet")
    contract, doc = read_dataset_json(out)
    write_dataset_json(dst, contract, job=doc["job"], config=doc["config"])
    return dst

