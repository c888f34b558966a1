"""Training data: a seeded, resumable, task-mixed stream of padded batches read from WebDataset shards.

    plan.py    which folders, shards and samples a run trains and validates on, mixed in which proportions
    prep.py    one decoded sample -> model inputs (audio representation, normalisation, crop); padded batches
    stream.py  the seeded, resumable stream of batches, and the fixed samples (validation, normalisation)

The names below are the ones the trainer, the benchmarks and the tests use.
"""

from model.data.plan import (
    DataError,
    Source,
    TrainData,
    describe_sources,
    finetune_sources,
    held_out_rows,
    open_datasets,
    plan_finetune,
    plan_pretrain,
    read_index,
    task_sources,
)
from model.data.prep import SamplePrep, make_batch, prep_for_model
from model.data.stream import (
    TrainLoader,
    TrainStream,
    batches_made_by,
    estimate_audio_norm,
    fixed_batches,
    load_samples,
    seed_of,
    shard_samples,
)

__all__ = ["DataError", "SamplePrep", "Source", "TrainData", "TrainLoader", "TrainStream", "batches_made_by",
           "describe_sources", "estimate_audio_norm", "finetune_sources", "fixed_batches", "held_out_rows",
           "load_samples", "make_batch", "open_datasets", "plan_finetune", "plan_pretrain", "prep_for_model",
           "read_index", "seed_of",
           "shard_samples", "task_sources"]
