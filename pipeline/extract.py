"""`pipeline run extract`: manifest -> feature shards, as a Ray Data streaming pipeline.

Two placements of the same stages (config `visual.placement`):
  split (default with GPUs): manifest rows (blocks of `rows_per_task`)
      -> [decode -> audio -> phonemes]   CPU tasks
      -> [visual encoder]                actor pool, a GPU each (models loaded once per actor)
      -> [VAE latents]                   actor pool, only with --vae
  fused (default without GPUs): one actor pool of CPU workers, each running every stage with its models
      loaded once. Decoded frames never leave the worker: on CPU, shipping 150 kB frames through the object
      store to a separate encoder process costs more than encoding them (BENCHMARKS.md).
  Either way -> driver: rows grouped by unit -> one atomic shard per unit + ledger entry (pipeline/assemble.py).
Work is processed in windows of units so memory stays bounded whatever the manifest size.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from manifests.schema import SPEECH_TASKS
from manifests.validate import read_manifest
from pipeline.assemble import UnitAssembler
from pipeline.config import ExtractConfig, config_hash, to_dict
from pipeline.ledger import Ledger
from pipeline.report import finish_job
from stages.base import Row
from stages.contract import ContractError, FeatureContract, read_dataset_json, write_dataset_json
from stages.visual import check_model_dir

JOB = "extract"
WINDOW_ROWS = 20_000  # rows handed to one Ray Data execution; bounds driver and object-store memory


def visual_info(config: ExtractConfig) -> dict[str, Any]:
    """What the contract says about the encoder, read from its config.json (no weights loaded)."""
    from transformers import CLIPVisionConfig

    if not config.visual.model_dir:
        raise ContractError("no visual model given: pass --visual-model DIR (a local CLIP directory in the "
                            "Hugging Face layout), or set visual.model_dir in --config")
    model_dir = check_model_dir(config.visual.model_dir, "visual model")
    vision = CLIPVisionConfig.from_pretrained(str(model_dir), local_files_only=True)
    return {"name": config.visual.encoder, "model_dir": str(model_dir.resolve()), "dim": int(vision.hidden_size),
            "image_size": int(vision.image_size), "decode_size": config.decode.image_size,
            "resize": "squash", "feature": "pooler_output", "precision": config.visual.precision,
            "layers": int(vision.num_hidden_layers), "patch_size": int(vision.patch_size),
            "random_init": bool(getattr(vision, "vssflow_random_init", False))}


def build_contract(config: ExtractConfig) -> FeatureContract:
    from stages.phonemes import PhonemeStage

    encoder = visual_info(config)
    latent = None
    if config.latent.vae_dir:
        from stages.latent import latent_contract

        latent = latent_contract(Path(config.latent.vae_dir))  # validates the directory, names the path
    phonemes = PhonemeStage(language=config.phonemes.language, with_stress=config.phonemes.with_stress,
                            max_chars=config.phonemes.max_chars)
    return FeatureContract(
        sample_rate=config.decode.sample_rate, video_fps=config.decode.fps, video_dim=encoder["dim"],
        video_encoder=encoder, mel=config.mel.to_dict(), phones=phonemes.vocab_dict(),
        loudness=config.loudness.to_dict(), max_seconds=config.decode.max_seconds, latent=latent)


def open_output(out_dir: Path, contract: FeatureContract, config: ExtractConfig) -> None:
    """A new folder gets dataset.json; an existing one must have been made under the same contract."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "dataset.json").exists():
        existing, doc = read_dataset_json(out_dir)
        if doc.get("job") != JOB or existing.feature_hash != contract.feature_hash:
            diff = "; ".join(existing.differences(contract)[:5]) or f"job {doc.get('job')!r}"
            raise ContractError(f"{out_dir} holds a {doc.get('job')} output made with different features ({diff}). "
                                f"Use a new --out folder, or the same config and models as before.")
        return
    write_dataset_json(out_dir, contract, job=JOB, config=to_dict(config))


def speech_span(row: Row) -> Optional[list[float]]:
    """The speech span in clip time (0 = first sample of the clip), clipped to the clip."""
    if row["task"] not in SPEECH_TASKS:
        return None
    start = float(row.get("start_s") or 0.0)
    duration = float(row["duration_s"])
    a = row.get("speech_start_s")
    b = row.get("speech_end_s")
    a = 0.0 if a is None else min(max(float(a) - start, 0.0), duration)
    b = duration if b is None else min(max(float(b) - start, 0.0), duration)
    return [a, b] if b > a else [0.0, duration]


def extract_sample(row: Row):
    meta = {
        "clip_id": row["clip_id"], "task": row["task"], "dataset": row.get("dataset"), "split": row.get("split"),
        "speaker": row.get("speaker"), "transcript": row.get("transcript"), "phonemes": row.get("phonemes"),
        "speech_span_s": speech_span(row), "has_video": row.get("video") is not None,
        "duration_s": row["duration_s"], "audio_duration_s": row.get("audio_duration_s"),
        "video_duration_s": row.get("video_duration_s"), "cut": bool(row.get("cut")),
        "source": {"video_path": row.get("video_path"), "audio_path": row.get("audio_path"),
                   "start_s": row.get("start_s"), "end_s": row.get("end_s"),
                   "sample_rate": row.get("source_sample_rate"), "channels": row.get("source_channels")},
        "loudness_lufs": row.get("loudness_lufs"), "gain_db": row.get("gain_db"),
        "peak_limited": bool(row.get("peak_limited")), "silent": bool(row.get("silent")),
    }
    if meta["loudness_lufs"] is not None and not math.isfinite(meta["loudness_lufs"]):
        meta["loudness_lufs"] = None  # digital silence measures -inf; JSON has no infinities
    arrays = {"video": row.get("video"), "mel": row.get("mel"), "latent": row.get("latent"),
              "phones": row.get("phone_ids")}
    return meta, arrays, row.get("flac")


def extract_index(row: Row, meta: dict) -> dict[str, Any]:
    return {"task": meta["task"], "dataset": meta["dataset"], "split": meta["split"], "speaker": meta["speaker"],
            "duration_s": meta["duration_s"], "has_video": meta["has_video"],
            "n_video": 0 if row.get("video") is None else len(row["video"]), "n_mel": len(row["mel"]),
            "n_phones": 0 if row.get("phone_ids") is None else len(row["phone_ids"]),
            "loudness_lufs": meta["loudness_lufs"], "silent": meta["silent"], "cut": meta["cut"]}


def cpu_stages(config: ExtractConfig, data_root: Path) -> list:
    from stages.audio import AudioFeatureStage
    from stages.decode import DecodeStage
    from stages.phonemes import PhonemeStage

    return [DecodeStage(data_root=str(data_root), config=config.decode),
            AudioFeatureStage(mel=config.mel, loudness=config.loudness),
            PhonemeStage(language=config.phonemes.language, with_stress=config.phonemes.with_stress,
                         max_chars=config.phonemes.max_chars)]


def visual_stage(config: ExtractConfig, threads: Optional[int] = None):
    from stages.visual import VisualEncoderStage

    v = config.visual
    return VisualEncoderStage(encoder=v.encoder, model_dir=v.model_dir, batch_frames=v.batch_frames,
                              device=v.device, precision=v.precision, num_threads=v.num_threads or threads)


def latent_stage(config: ExtractConfig):
    from stages.latent import LatentStage

    return LatentStage(vae_dir=config.latent.vae_dir, batch_size=config.latent.batch_size)


def placement(config: ExtractConfig, gpus: int) -> str:
    choice = config.visual.placement
    if choice not in ("auto", "split", "fused"):
        raise ValueError(f"visual.placement must be auto, split or fused, not {choice!r}")
    return ("split" if gpus else "fused") if choice == "auto" else choice


def build_dataset(rows: pa.Table, config: ExtractConfig, data_root: Path):
    """The Ray Data graph over one window of pending rows."""
    import ray

    from pipeline.ray_stages import StageActor, run_stages
    from pipeline.runtime import cluster_gpus

    step = max(1, config.rows_per_task)
    ds = ray.data.from_arrow([rows.slice(i, step) for i in range(0, rows.num_rows, step)])
    gpus = cluster_gpus()
    drop = ("audio", "frames")
    if placement(config, gpus) == "fused":
        threads = max(1, int(config.cpu_stage_cpus))
        stages = cpu_stages(config, data_root) + [visual_stage(config, threads)]
        if config.latent.vae_dir:
            stages.append(latent_stage(config))
        workers = config.cpu_workers or max(1, int(ray.cluster_resources().get("CPU", 1) / config.cpu_stage_cpus))
        return ds.map_batches(StageActor, fn_constructor_kwargs={"stages": stages, "drop": drop}, batch_size=None,
                              compute=ray.data.ActorPoolStrategy(size=workers),
                              num_cpus=config.cpu_stage_cpus)
    ds = ds.map_batches(run_stages, fn_kwargs={"stages": cpu_stages(config, data_root), "drop": ("audio",)},
                        batch_size=None, num_cpus=config.cpu_stage_cpus)
    node_cpus = int(ray.cluster_resources().get("CPU", 1))
    # On a CPU-only cluster (split forced) the encoder asks for half a CPU so decode tasks keep running beside it.
    resources = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_gpus": 0, "num_cpus": 0.5}
    ds = ds.map_batches(StageActor, fn_constructor_kwargs={"stages": [visual_stage(config, None if gpus else node_cpus)],
                                                           "drop": drop},
                        batch_size=config.visual.rows_per_batch,
                        compute=ray.data.ActorPoolStrategy(size=config.visual.actors or max(gpus, 1)), **resources)
    if config.latent.vae_dir:
        ds = ds.map_batches(StageActor, fn_constructor_kwargs={"stages": [latent_stage(config)], "drop": ()},
                            batch_size=config.latent.batch_size, compute=ray.data.ActorPoolStrategy(size=1),
                            **resources)
    return ds


def pending_rows(manifest: pa.Table, plan: pa.Table, done: set[int]) -> pa.Table:
    """Manifest rows whose unit is not finished, with their unit and plan position, in plan order."""
    todo = plan.filter(pc.invert(pc.is_in(plan["unit"], value_set=pa.array(sorted(done), pa.int64()))))
    joined = todo.join(manifest, keys="clip_id", join_type="inner")
    return joined.sort_by("position")


def run_extract(*, manifest: Path, data_root: Path, out_dir: Path, config: ExtractConfig,
                address: Optional[str] = None, progress: Optional[Callable[[dict], None]] = None,
                max_units: Optional[int] = None) -> dict[str, Any]:
    """Run (or resume) an extract job; returns the report. `max_units` stops early (tests of resume)."""
    started = time.time()
    table = read_manifest(manifest)
    data_root = Path(data_root).resolve()
    if not data_root.is_dir():
        raise FileNotFoundError(f"data root {data_root} is not a directory")
    contract = build_contract(config)
    out_dir = Path(out_dir)
    open_output(out_dir, contract, config)
    ledger = Ledger(out_dir)
    plan, added = ledger.extend_plan(table["clip_id"], config.shard_size)
    done = ledger.done_units()
    todo = pending_rows(table, plan, done)
    unit_sizes = _unit_sizes(plan)
    missing = _units_missing_rows(plan, table, done)
    if missing:
        raise ValueError(f"the manifest no longer holds rows planned for unfinished units {missing[:5]} "
                         f"(clip ids removed?). Restore them, or start a new --out folder.")
    stats = {"rows_total": table.num_rows, "rows_planned_new": added, "rows_todo": todo.num_rows,
             "units_total": len(unit_sizes), "units_done_before": len(done), "where": None}
    if todo.num_rows:
        from pipeline.ray_stages import batch_to_rows
        from pipeline.runtime import init_ray

        stats["where"] = init_ray(address)
        positions = dict(zip(todo["clip_id"].to_pylist(), todo["position"].to_pylist()))
        assembler = UnitAssembler(out_dir=out_dir, job=JOB, contract=contract, ledger=ledger,
                                  unit_sizes=unit_sizes, positions=positions,
                                  to_sample=extract_sample, to_index=extract_index)
        units_written = rows_processed = 0
        clip_seconds = 0.0
        for window in _windows(todo, max_units):
            ds = build_dataset(window, config, data_root)
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
                for row in batch_to_rows(batch):
                    summary = assembler.add(row)
                    if summary is not None:
                        units_written += 1
                        rows_processed += summary["rows"]
                        clip_seconds += summary["clip_seconds"]
                        if progress:
                            progress({"rows_done": assembler.rows_done, "rows_todo": todo.num_rows,
                                      "unit": summary, "units_written": units_written})
        stats.update(units_written=units_written, rows_processed=rows_processed,
                     clip_seconds_processed=round(clip_seconds, 3))
    return finish_job(out_dir=out_dir, job=JOB, ledger=ledger, contract=contract, config=to_dict(config),
                      config_hash=config_hash(config), started=started, stats=stats, manifest=str(manifest))


def _unit_sizes(plan: pa.Table) -> dict[int, int]:
    counts = plan.group_by("unit").aggregate([("clip_id", "count")])
    return dict(zip(counts["unit"].to_pylist(), counts["clip_id_count"].to_pylist()))


def _units_missing_rows(plan: pa.Table, manifest: pa.Table, done: set[int]) -> list[int]:
    absent = plan.filter(pc.invert(pc.is_in(plan["clip_id"], value_set=manifest["clip_id"])))
    return sorted({u for u in absent["unit"].to_pylist() if u not in done})


def _windows(todo: pa.Table, max_units: Optional[int]):
    """Slices of whole units, about WINDOW_ROWS rows each (optionally only the first `max_units` units)."""
    units = todo["unit"].to_numpy()
    if max_units is not None:
        keep_units = np.unique(units)[:max_units]
        todo = todo.filter(pc.is_in(todo["unit"], value_set=pa.array(keep_units)))
        units = todo["unit"].to_numpy()
    start = 0
    while start < len(units):
        end = min(start + WINDOW_ROWS, len(units))
        while end < len(units) and units[end] == units[end - 1]:
            end += 1  # never split a unit across windows
        yield todo.slice(start, end - start)
        start = end
