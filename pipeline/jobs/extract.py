"""`pipeline run extract`: manifest -> feature shards, as a Ray Data streaming pipeline.

Each unit (one shard, rows of one task) is a Ray task on a CPU worker that runs its rows through the stages in
chunks of `rows_per_task` and streams the samples into the unit's shard (pipeline/jobs/assemble.py); the driver
only records each unit's ledger entry. Two placements of the encoders (config `visual.placement`):
  fused (default without GPUs): the task runs every stage itself, models loaded once per worker process.
      Decoded frames never leave the worker: on CPU, shipping 150 kB frames through the object store to a
      separate encoder process costs more than encoding them (BENCHMARKS.md).
  split (default with GPUs): the task decodes (decode -> audio -> speech span -> phonemes) and sends each
      chunk's frames to a pool of encoder actors, a GPU each (and the mels to the VAE actors with --vae); the
      features come back to the task, which writes the shard. Frames cross the object store once, samples never.
Work is processed in windows of units so memory stays bounded whatever the manifest size.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pyarrow as pa

from manifests import storage
from manifests.errors import UsageError
from manifests.tasks import SPEECH_TASKS
from manifests.validate import read_manifest
from pipeline.jobs.runner import JobSpec, RunOptions, check_job_sizes, run_job
from stages.audio import LoudnessConfig, MelConfig
from stages.base import Row
from stages.decode import DecodeConfig
from stages.format.contract import STREAM_ROW_KEYS, ContractError, FeatureContract, stream_members
from stages.latent import LatentConfig
from stages.lip import LipConfig
from stages.model_dir import resolve_model_dir
from stages.phonemes import PhonemeConfig
from stages.speaker import SpeakerConfig
from stages.speech_span import VadConfig
from stages.sync import SyncConfig
from stages.visual import VisualConfig, describe_clip_dir

JOB = "extract"


@dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    visual: VisualConfig = field(default_factory=VisualConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    loudness: LoudnessConfig = field(default_factory=LoudnessConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    phonemes: PhonemeConfig = field(default_factory=PhonemeConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    lip: LipConfig = field(default_factory=LipConfig)               # the mouth-region stream (enabled by default)
    sync: SyncConfig = field(default_factory=SyncConfig)            # the synchrony stream (off without a model)
    speaker: SpeakerConfig = field(default_factory=SpeakerConfig)   # the speaker reference (enabled by default)
    shard_size: int = 256           # rows per work unit; one unit = one shard
    rows_per_task: int = 4          # rows per Ray call of the CPU stages (decode, audio, phonemes)
    cpu_stage_cpus: float = 1.0     # logical CPUs one CPU-stage worker asks Ray for
    cpu_workers: Optional[int] = None  # fused placement: worker actors; None = cluster CPUs / cpu_stage_cpus

    def __post_init__(self) -> None:
        check_job_sizes(self)


def visual_info(config: ExtractConfig) -> dict[str, Any]:
    """What the contract says about the encoder, read from its config.json (no weights loaded)."""
    if not config.visual.model_dir:
        raise ContractError("no visual model given: pass --visual-model DIR (a local CLIP directory in the "
                            "Hugging Face layout), or set visual.model_dir in --config")
    model_dir = resolve_model_dir(config.visual.model_dir, "visual model").resolve()   # a cached repo id: its folder
    info = {"name": config.visual.encoder, "model_dir": str(model_dir),
            "decode_size": config.decode.image_size, "resize": "squash", "feature": config.visual.feature,
            "precision": config.visual.precision, **describe_clip_dir(model_dir)}
    if frame_needs(config):
        info["scaler"] = "opencv"   # frames decoded once at their own size for every stream (stages.frames)
    return info


def stream_contract(config: ExtractConfig) -> Optional[dict]:
    """The contract's extra temporal streams (lip, sync); None without any. Checks every local model before work."""
    from stages.format.contract import stream_record

    streams = {}
    lip = config.lip
    if lip.enabled:
        from stages.encoder_dir import describe_encoder_dir
        from stages.lip import LIP_TASKS
        from stages.mouth import FACE_CASCADE, load_face_detector

        finder = {"roi": lip.roi, "crop_size": lip.crop_size, "max_side": lip.max_side}
        if lip.roi == "fixed":
            finder["box"] = list(lip.box)
        else:
            load_face_detector()   # the packaged detector must load here, before any worker starts
            finder.update(detector=f"opencv-haar/{FACE_CASCADE}", detect_fps=lip.detect_fps,
                          smooth_s=lip.smooth_s, min_face_share=lip.min_face_share)
        if lip.model_dir:
            encoder = {**describe_encoder_dir(lip.model_dir, "lip"), "mouth": finder}
            dtype, shape = "float16", [encoder["dim"]]
        else:
            encoder, dtype, shape = {"name": "crops", "mouth": finder}, "uint8", [lip.crop_size, lip.crop_size]
        streams["lip"] = stream_record(fps=lip.fps, region="mouth", encoder=encoder, dtype=dtype,
                                       frame_shape=shape, tasks=LIP_TASKS, valid=True)
    if config.sync.model_dir:
        from stages.encoder_dir import describe_encoder_dir
        from stages.sync import SYNC_TASKS

        encoder = describe_encoder_dir(config.sync.model_dir, "sync")
        streams["sync"] = stream_record(fps=encoder["fps"], region="frame", encoder=encoder, dtype="float16",
                                        frame_shape=[encoder["dim"]], tasks=SYNC_TASKS, valid=False)
    return streams or None


def frame_needs(config: ExtractConfig) -> tuple:
    """What decode reads for the extra streams, besides the CLIP frames (stages.frames.FrameNeed)."""
    needs = []
    if config.lip.enabled:
        needs.append(config.lip.frame_need())
    if config.sync.model_dir:
        from stages.encoder_dir import describe_encoder_dir
        from stages.sync import sync_frame_need

        needs.append(sync_frame_need(describe_encoder_dir(config.sync.model_dir, "sync")))
    return tuple(needs)


def build_contract(config: ExtractConfig) -> FeatureContract:
    encoder = visual_info(config)
    latent = None
    if config.latent.vae_dir:
        from stages.latent import latent_contract

        latent = latent_contract(Path(config.latent.vae_dir), mel_frames_per_second=config.mel.frames_per_second,
                                 n_mels=config.mel.n_mels)  # validates the directory, names the path
    phonemes = phoneme_stage(config)
    streams = stream_contract(config)
    speaker = None
    if config.speaker.enabled:
        from stages.speaker import speaker_info

        speaker = speaker_info(config.speaker)
    return FeatureContract(
        sample_rate=config.decode.sample_rate, video_fps=config.decode.fps, video_dim=encoder["dim"],
        video_encoder=encoder, mel=config.mel.to_dict(), phones=phonemes.vocab_dict(),
        loudness=config.loudness.to_dict(), max_seconds=config.decode.max_seconds, latent=latent,
        streams=streams, speaker=speaker, members=stream_members(streams, speaker))


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


def clip_words(row: Row) -> Optional[list[dict]]:
    """The row's timed words on the clip's timeline (0 = its first sample), or None when the manifest has none."""
    from stages.speech_span import timed_words

    words = timed_words(row.get("words"))
    if not words or row["task"] not in SPEECH_TASKS:
        return None
    start = float(row.get("start_s") or 0.0)
    return [{"word": w["word"], "start_s": round(w["start_s"] - start, 3), "end_s": round(w["end_s"] - start, 3)}
            for w in words]


def extract_sample(row: Row):
    meta = {
        "clip_id": row["clip_id"], "task": row["task"], "dataset": row.get("dataset"), "split": row.get("split"),
        "subset": row.get("subset"), "label": row.get("label"), "parent_id": row.get("parent_id"),
        "speaker": row.get("speaker"), "transcript": row.get("transcript"), "phonemes": row.get("phonemes"),
        "speech_span_s": speech_span(row), "speech_span_source": row.get("speech_span_source"),
        "window_source": row.get("window_source"), "words": clip_words(row),
        "has_video": row.get("video") is not None,
        "duration_s": row["duration_s"], "audio_duration_s": row.get("audio_duration_s"),
        "video_duration_s": row.get("video_duration_s"), "cut": bool(row.get("cut")),
        "truncated": bool(row.get("truncated")),
        "source": {"video_path": row.get("video_path"), "audio_path": row.get("audio_path"),
                   "start_s": row.get("start_s"), "end_s": row.get("end_s"),
                   "sample_rate": row.get("source_sample_rate"), "channels": row.get("source_channels")},
        "loudness_lufs": row.get("loudness_lufs"), "gain_db": row.get("gain_db"),
        "peak_limited": bool(row.get("peak_limited")), "silent": bool(row.get("silent")),
    }
    if meta["loudness_lufs"] is not None and not math.isfinite(meta["loudness_lufs"]):
        meta["loudness_lufs"] = None  # digital silence measures -inf; JSON has no infinities
    if row.get("face_share") is not None:
        meta["face_share"] = row["face_share"]   # share of the mouth stream's frames in which the face was found
    arrays = {"video": row.get("video"), "mel": row.get("mel"), "latent": row.get("latent"),
              "phones": row.get("phone_ids")}
    arrays.update({member: row[key] for member, key in STREAM_ROW_KEYS.items() if row.get(key) is not None})
    return meta, arrays, row.get("flac")


def extract_index(row: Row, meta: dict) -> dict[str, Any]:
    return {"task": meta["task"], "dataset": meta["dataset"], "split": meta["split"], "subset": meta["subset"],
            "label": meta["label"], "speaker": meta["speaker"],
            "duration_s": meta["duration_s"], "has_video": meta["has_video"],
            "n_video": 0 if row.get("video") is None else len(row["video"]), "n_mel": len(row["mel"]),
            "n_phones": 0 if row.get("phone_ids") is None else len(row["phone_ids"]),
            "loudness_lufs": meta["loudness_lufs"], "silent": meta["silent"], "cut": meta["cut"]}


def phoneme_stage(config: ExtractConfig):
    from stages.phonemes import PhonemeStage

    p = config.phonemes
    return PhonemeStage(language=p.language, with_stress=p.with_stress, max_chars=p.max_chars, espeak=p.espeak,
                        phone_set=p.phone_set, text_norm=p.text_norm, word_boundary=p.word_boundary)


def cpu_stages(config: ExtractConfig, data_root: Path) -> list:
    from stages.audio import AudioFeatureStage
    from stages.decode import DecodeStage
    from stages.speech_span import SpeechSpanStage

    stages = [DecodeStage(data_root=str(data_root), config=config.decode, streams=frame_needs(config)),
              AudioFeatureStage(mel=config.mel, loudness=config.loudness),
              SpeechSpanStage(data_root=str(data_root), decode=config.decode, mel=config.mel,
                              loudness=config.loudness, vad=config.vad, streams=frame_needs(config)),
              phoneme_stage(config)]
    if config.lip.enabled:
        from stages.lip import MouthStage

        stages.append(MouthStage(config=config.lip))   # grey frames -> mouth crops before frames leave the worker
    return stages


def words_as_json(rows: pa.Table) -> pa.Table:
    """The manifest's timed words as one JSON text per row: rows cross Ray as plain values (stages.speech_span)."""
    words = rows["words"].to_pylist()
    text = pa.array([None if w is None else json.dumps(w) for w in words], pa.string())
    return rows.set_column(rows.schema.get_field_index("words"), "words", text)


def visual_stage(config: ExtractConfig, threads: Optional[int] = None):
    """The encoders, placed together (one actor pool): CLIP, then the lip, sync and speaker encoders configured."""
    from stages.visual import VisualEncoderStage

    v = config.visual
    visual = VisualEncoderStage(encoder=v.encoder, model_dir=v.model_dir, batch_frames=v.batch_frames,
                                device=v.device, precision=v.precision, num_threads=v.num_threads or threads,
                                feature=v.feature)
    parts = [visual]
    if config.lip.enabled and config.lip.model_dir:
        from stages.lip import LipEncoderStage

        parts.append(LipEncoderStage(model_dir=config.lip.model_dir, batch_frames=config.lip.batch_frames,
                                     device=v.device))
    if config.sync.model_dir:
        from stages.sync import SyncEncoderStage

        parts.append(SyncEncoderStage(model_dir=config.sync.model_dir, device=config.sync.device))
    if config.speaker.enabled:
        from stages.speaker import SpeakerStage

        parts.append(SpeakerStage(config=config.speaker))
    if len(parts) == 1:
        return visual
    from stages.encoders import EncoderStages

    return EncoderStages(parts)


def latent_stage(config: ExtractConfig):
    from stages.latent import LatentStage

    return LatentStage(vae_dir=config.latent.vae_dir, batch_size=config.latent.batch_size)


def placement(config: ExtractConfig, gpus: int) -> str:
    choice = config.visual.placement   # VisualConfig refuses anything but auto, split, fused
    return ("split" if gpus else "fused") if choice == "auto" else choice


class ExtractGraph:
    """The Ray side of one extract run: its unit work (stages, or encoder actors for the split placement, made
    once per run) and the Ray Data graph over each window of pending units."""

    def __init__(self, config: ExtractConfig, data_root: str, out_dir, contract: FeatureContract):
        self.config, self.data_root, self.out_dir, self.contract = config, data_root, out_dir, contract
        self._work = None
        self._layout: dict[str, Any] = {}

    def placement(self) -> dict[str, Any]:
        """Where the stages run (after init_ray: it reads the cluster's resources)."""
        import ray

        from pipeline.jobs.ray_exec import cluster_gpus

        config, gpus = self.config, cluster_gpus()
        cpus = int(ray.cluster_resources().get("CPU", 1))
        kind = placement(config, gpus)
        encoder_cpus = 0 if kind == "fused" else (1 if gpus else 0.5) * (config.visual.actors or max(gpus, 1))
        workers = config.cpu_workers or max(1, int((cpus - encoder_cpus) / config.cpu_stage_cpus))
        return {"placement": kind, "unit_tasks_at_once": workers, "cpus_per_task": config.cpu_stage_cpus,
                "gpus": gpus, "encoder_actors": 0 if kind == "fused" else config.visual.actors or max(gpus, 1)}

    def work(self):
        from pipeline.jobs.assemble import UnitWork

        if self._work is None:
            self._layout = self.placement()
            stages = self._stages(self._layout)
            self._work = UnitWork(job=JOB, out_root=self.out_dir, contract=self.contract, to_sample=extract_sample,
                                  to_index=extract_index, stages=tuple(stages),
                                  rows_per_chunk=self.config.rows_per_task, stage_key=f"{JOB}-{uuid.uuid4().hex}")
        return self._work

    def _stages(self, layout: dict[str, Any]) -> list:
        from pipeline.jobs.ray_exec import RemoteStages, stage_pool

        config = self.config
        stages = cpu_stages(config, self.data_root)
        if layout["placement"] == "fused":
            stages.append(visual_stage(config, max(1, int(config.cpu_stage_cpus))))
            if config.latent.vae_dir:
                stages.append(latent_stage(config))
            return stages
        gpus = layout["gpus"]
        # On a CPU-only cluster (split forced) the encoder asks for half a CPU so unit tasks keep running beside it.
        resources = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_gpus": 0, "num_cpus": 0.5}
        encoders = stage_pool([visual_stage(config, None if gpus else 1)], size=layout["encoder_actors"],
                              drop=("frames",), **resources)
        stages.append(RemoteStages(encoders, drop=("audio",)))
        if config.latent.vae_dir:
            stages.append(RemoteStages(stage_pool([latent_stage(config)], size=1, **resources)))
        return stages

    def __call__(self, rows: pa.Table):
        """The Ray Data graph over one window of pending rows: a task per unit, each writing its shard."""
        from pipeline.jobs.ray_exec import unit_dataset

        work = self.work()
        return unit_dataset(rows, work, num_cpus=self.config.cpu_stage_cpus,
                            concurrency=self._layout["unit_tasks_at_once"],
                            remote=storage.is_url(self.data_root))


def run_extract(*, manifest: Path, data_root: Path, out_dir: Path, config: ExtractConfig,
                address: Optional[str] = None, progress: Optional[Callable[[dict], None]] = None,
                options: RunOptions = RunOptions()) -> dict[str, Any]:
    """Run (or resume) an extract job; returns the report."""
    rows = words_as_json(read_manifest(manifest))
    data_root = check_data_root(data_root)
    contract = build_contract(config)
    out = storage.as_location(out_dir)
    graph = ExtractGraph(config, data_root, out, contract)
    spec = JobSpec(name=JOB, out_dir=out, contract=contract, config=config, rows=rows,
                   shard_size=config.shard_size, build_dataset=graph, to_sample=extract_sample,
                   to_index=extract_index, source=str(manifest), placement=graph.placement)
    return run_job(spec, address=address, progress=progress, options=options)


def check_data_root(data_root) -> str:
    """The data root as the stages get it: a resolved local folder, or an object-storage URL."""
    if storage.is_url(str(data_root)):
        return str(storage.as_location(str(data_root)))
    root = Path(data_root).resolve()
    if not root.is_dir():
        raise UsageError(f"data root {root} is not a directory: pass the folder the manifest's paths are "
                         "relative to (--data-root)")
    return str(root)
