"""Decode each media file once: 10 fps frames by presentation time, and 16 kHz mono audio.

The clip is the common span of its video and audio (inside the optional trim window), cut to
`max_seconds`. Frame i of the output is the frame on screen at time start + i/fps, found from the
container's presentation timestamps, so variable frame rate works. decord applies rotation metadata.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from manifests.paths import PathEscapesRoot, resolve_under_root
from manifests.tasks import VIDEO_TASKS
from stages.base import Reject, Row, Stage
from stages.format import rates

Seconds = float


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    fps: float = rates.VIDEO_FPS
    sample_rate: int = rates.SAMPLE_RATE
    image_size: int = 224          # frames are resized (squashed) to image_size x image_size in the decoder
    max_seconds: Seconds = 10.0    # longer clips are cut
    min_seconds: Seconds = 0.1     # shorter clips are rejected
    max_source_seconds: Seconds = 3 * 3600.0  # refuse to decode absurdly long sources (memory guard)

    def __post_init__(self) -> None:
        if not (self.fps > 0 and self.sample_rate > 0 and self.image_size > 0):
            raise ValueError(f"fps, sample_rate and image_size must be positive, got {self.fps}, "
                             f"{self.sample_rate}, {self.image_size}")
        if not 0 < self.min_seconds < self.max_seconds <= self.max_source_seconds:
            raise ValueError(f"need 0 < min_seconds < max_seconds <= max_source_seconds, got {self.min_seconds}, "
                             f"{self.max_seconds}, {self.max_source_seconds}")

    def to_dict(self) -> dict:
        return asdict(self)


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise Reject("missing_file", str(path))
    if path.stat().st_size == 0:
        raise Reject("empty_file", str(path))


def frame_indices_at(times_s: np.ndarray, frame_starts_s: np.ndarray) -> np.ndarray:
    """Index of the frame on screen at each time: the last frame whose presentation starts at or before it."""
    idx = np.searchsorted(frame_starts_s, times_s + 1e-6, side="right") - 1
    return np.clip(idx, 0, len(frame_starts_s) - 1)


def downmix(wave_cn: np.ndarray) -> np.ndarray:
    """[C, N] -> [N] by the mean of channels (any channel count)."""
    return wave_cn.mean(axis=0).astype(np.float32, copy=False)


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return wave.astype(np.float32, copy=False)
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), from_rate, to_rate)
    return out.numpy()


class DecodeStage(Stage):
    """Manifest row -> row["frames"] uint8 [T_v, S, S, 3] (video tasks) and row["audio"] float32 [N] at 16 kHz."""

    name = "decode"

    def __init__(self, *, data_root: str, config: DecodeConfig = DecodeConfig()):
        super().__init__()
        self.data_root = str(data_root)
        self.config = config

    def _resolve(self, rel: Optional[str]) -> Optional[Path]:
        if rel is None:
            return None
        try:
            return resolve_under_root(Path(self.data_root), rel)
        except PathEscapesRoot as e:
            raise Reject("path_escapes_root", str(e)) from None
        except ValueError as e:
            raise Reject("bad_path", str(e)) from None

    def process(self, row: Row) -> None:
        cfg = self.config
        wants_video = row["task"] in VIDEO_TASKS
        video_path = self._resolve(row.get("video_path"))
        audio_path = self._resolve(row.get("audio_path"))
        if wants_video and video_path is None:
            raise Reject("no_video", f"task {row['task']} needs a video_path")
        if video_path is None and audio_path is None:
            raise Reject("no_audio", "row has neither audio_path nor video_path")
        for p in (video_path, audio_path):
            if p is not None:
                _check_file(p)

        reader = frame_starts = None
        video_duration = None
        if wants_video:
            reader, frame_starts, video_duration = self._open_video(video_path)
        if audio_path is not None:
            wave, source_rate, channels = self._read_audio_file(audio_path)
        else:
            wave, source_rate, channels = self._read_container_audio(video_path)
        if not np.isfinite(wave).all():
            raise Reject("bad_samples", f"{int((~np.isfinite(wave)).sum())} NaN/Inf samples")
        audio_duration = len(wave) / cfg.sample_rate

        start = float(row.get("start_s") or 0.0)
        end = min(audio_duration, video_duration if video_duration is not None else math.inf)
        if row.get("end_s") is not None:
            end = min(end, float(row["end_s"]))
        duration = end - start
        cut = duration > cfg.max_seconds
        duration = min(duration, cfg.max_seconds)
        if duration < cfg.min_seconds:
            raise Reject("too_short", f"usable span {max(duration, 0.0):.3f}s < {cfg.min_seconds}s "
                         f"(audio {audio_duration:.3f}s, video {video_duration}s, start {start}s)")

        n_samples = rates.frames_in(duration, cfg.sample_rate)
        first = int(round(start * cfg.sample_rate))
        row["audio"] = np.ascontiguousarray(wave[first:first + n_samples], dtype=np.float32)
        if reader is not None:
            n_frames = rates.frames_in(duration, cfg.fps)
            times = start + np.arange(n_frames) / cfg.fps
            indices = frame_indices_at(times, frame_starts)
            try:
                row["frames"] = reader.get_batch(indices.tolist()).asnumpy()  # [T_v, S, S, 3] uint8
            except Exception as e:  # noqa: BLE001 - a container that opens but fails mid-stream is truncated
                raise Reject("unreadable_media", f"frames: {type(e).__name__}: {e}") from None
        else:
            row["frames"] = None
        row.update(
            duration_s=n_samples / cfg.sample_rate,
            audio_duration_s=audio_duration,
            video_duration_s=video_duration,
            source_sample_rate=source_rate,
            source_channels=channels,
            cut=bool(cut),
        )

    def _open_video(self, path: Path):
        import decord

        cfg = self.config
        try:
            # num_threads=1: decord's threaded decoder fails on VP9 ("Error sending packet", EAGAIN).
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=cfg.image_size, height=cfg.image_size,
                                        num_threads=1)
            n = len(reader)
            stamps = reader.get_frame_timestamp(np.arange(n)) if n else np.zeros((0, 2))
        except Exception as e:  # noqa: BLE001 - decord raises plain errors for corrupt containers
            raise Reject("unreadable_media", f"video: {type(e).__name__}: {str(e)[:300]}") from None
        if n == 0:
            raise Reject("unreadable_media", "video stream has no decodable frames")
        if n == 1:
            raise Reject("single_frame_video", str(path))
        duration = float(stamps[-1, 1])
        if duration > cfg.max_source_seconds:
            raise Reject("source_too_long", f"{duration:.0f}s > {cfg.max_source_seconds:.0f}s")
        return reader, stamps[:, 0].astype(np.float64), duration

    def _read_container_audio(self, path: Path):
        """FFmpeg (inside decord) resamples and downmixes. Only its mono path is used: decord 0.6's
        multichannel resampling returns garbage samples (seen as ~1e38 values on 48 kHz stereo Opus)."""
        import decord

        try:
            reader = decord.AudioReader(str(path), ctx=decord.cpu(0), sample_rate=self.config.sample_rate, mono=True)
            wave = reader[:].asnumpy()[0]  # [N] at the target rate
        except Exception as e:  # noqa: BLE001
            message = str(e)
            if "audio stream" in message.lower() or "no audio" in message.lower():
                raise Reject("no_audio", f"{path.name} has no audio track and the row has no audio_path") from None
            raise Reject("unreadable_media", f"audio: {type(e).__name__}: {message[:300]}") from None
        if wave.size == 0:
            raise Reject("no_audio", f"{path.name} has an empty audio track")
        return wave.astype(np.float32, copy=False), None, None

    def _read_audio_file(self, path: Path):
        import soundfile as sf

        cfg = self.config
        try:
            info = sf.info(str(path))
            if info.duration > cfg.max_source_seconds:
                raise Reject("source_too_long", f"{info.duration:.0f}s > {cfg.max_source_seconds:.0f}s")
            wave_nc, rate = sf.read(str(path), dtype="float32", always_2d=True)  # [N, C]
        except Reject:
            raise
        except Exception:  # noqa: BLE001 - formats libsndfile lacks (m4a, ...) go through FFmpeg
            return self._read_container_audio(path)
        if wave_nc.shape[0] == 0:
            raise Reject("too_short", "audio file has no samples")
        return resample(downmix(wave_nc.T), rate, cfg.sample_rate), int(rate), int(wave_nc.shape[1])
