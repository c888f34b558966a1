"""What generated audio is compared with: the reference clip of each key, from an output folder or a manifest.

From an output folder (extract or synth-mix) the stored sample is the reference: its audio, transcript, speech span
and, for video tasks, the visual features' frame-to-frame change as the motion curve. From a manifest (with its data
root) each row is decoded and its audio normalised exactly as extract would store it (`DecodeStage`,
`AudioFeatureStage`), and the decoded 10 fps frames give the motion curve; a row the stages refuse has no
reference and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from manifests.errors import UsageError
from manifests.tasks import SPEECH_TASKS
from pipeline.evaluate.metrics import motion_from_features, motion_from_frames

Seconds = float


@dataclass(frozen=True)
class Reference:
    key: str
    task: str
    audio: Optional[np.ndarray]                      # float32 [N] at 16 kHz, loudness-normalised as extract stores it
    transcript: Optional[str]
    speech_span_s: Optional[tuple[Seconds, Seconds]]  # clip time
    motion: Optional[np.ndarray]                     # [T_v] at motion_fps; None without video
    motion_fps: float
    problem: Optional[str] = None                    # why there is no reference audio (a refused manifest row)


def load_references(source: Path, keys: list[str], *, data_root: Optional[Path] = None) -> dict[str, Reference]:
    """{key: Reference} for the keys the source holds (an output folder, or a manifest file with data_root)."""
    source = Path(source)
    if (source / "dataset.json").is_file():
        return _from_output(source, keys)
    if source.is_file() or source.suffix == ".parquet":
        if data_root is None:
            raise UsageError(f"{source} is a manifest: give --data-root, the folder its media paths are relative to")
        return _from_manifest(source, keys, Path(data_root))
    raise UsageError(f"reference {source} is neither an output folder (with dataset.json) nor a manifest file")


def _span(value) -> Optional[tuple[Seconds, Seconds]]:
    return (float(value[0]), float(value[1])) if value else None


def _from_output(root: Path, keys: list[str]) -> dict[str, Reference]:
    from pipeline.api import open_output

    out = open_output(root)
    stored = set(out.keys())
    wanted = [k for k in keys if k in stored]
    found = {}
    for sample in out.filter(key=wanted):
        video = sample.arrays.get("video")
        found[sample.key] = Reference(
            key=sample.key, task=sample.task, audio=sample.audio, transcript=sample.meta.get("transcript"),
            speech_span_s=_span(sample.meta.get("speech_span_s")),
            motion=motion_from_features(video) if video is not None else None, motion_fps=out.contract.video_fps)
    return found


def _from_manifest(manifest: Path, keys: list[str], data_root: Path) -> dict[str, Reference]:
    import pyarrow as pa
    import pyarrow.compute as pc

    from manifests.validate import read_manifest
    from stages.audio import AudioFeatureStage
    from stages.decode import DecodeConfig, DecodeStage

    table = read_manifest(manifest)
    table = table.filter(pc.is_in(table["clip_id"], value_set=pa.array(keys, pa.string())))
    config = DecodeConfig()
    stages = [DecodeStage(data_root=str(data_root), config=config), AudioFeatureStage()]
    found = {}
    for row in table.to_pylist():
        row = {k: v for k, v in row.items() if k != "words"}
        for stage in stages:
            row = stage([row])[0]
        start = float(row.get("start_s") or 0.0)
        span = None
        if row["task"] in SPEECH_TASKS and row.get("reject_reason") is None:
            a, b = row.get("speech_start_s"), row.get("speech_end_s")
            span = (a - start, b - start) if a is not None and b is not None else (0.0, float(row["duration_s"]))
        frames = row.get("frames")
        problem = None if row.get("reject_reason") is None else \
            f"{row['reject_stage']}/{row['reject_reason']}: {row.get('reject_detail')}"
        found[row["clip_id"]] = Reference(
            key=row["clip_id"], task=row["task"], audio=None if problem else row["audio"],
            transcript=row.get("transcript"), speech_span_s=span,
            motion=motion_from_frames(frames) if frames is not None and problem is None else None,
            motion_fps=config.fps, problem=problem)
    return found
