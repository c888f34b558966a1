"""Decode each media file once: 10 fps frames by presentation time (and each extra stream's), 16 kHz mono audio.

The clip is the common span of its video and audio (inside the optional trim window), cut to
`max_seconds`. Frame i of the output is the frame on screen at time start + i/fps, found from the
container's presentation timestamps, so variable frame rate works. decord applies rotation metadata.
Extra temporal streams (the mouth stream at 25 fps, the synchrony stream) pick their frames by the same rule at
their own rate, from the same read (`stages.frames`).

Before any decoder opens a file, its first bytes must name a self-contained container
(`manifests.media_sniff`): a playlist or concat list would make FFmpeg read other files. Only the window
that will be kept is read from audio files (`stages.media_read`), so memory is bounded by `max_seconds`.

What only the media can reveal is checked here (the manifest's own time rules are `manifests.validate`'s):
a trim window past the end of the media, a speech span outside the decoded clip, and a stream that stops
well short of the length its container states (kept and flagged `truncated`, or rejected below
`min_decoded_share`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from manifests.media_sniff import NotMedia, sniff_container
from manifests.paths import PathEscapesRoot, fetch_media, resolve_under_root
from manifests.tasks import SPEECH_TASKS, VIDEO_TASKS
from manifests.validate import time_problem
from stages.base import Reject, Row, Stage
from stages.format import rates
from stages.frames import FrameNeed, frame_indices_at, read_stream_frames
from stages.media_read import AudioSource, ContainerAudio, VideoSource, open_audio_file, open_video

Seconds = float


@dataclass(frozen=True, kw_only=True)
class DecodeConfig:
    fps: float = rates.VIDEO_FPS
    sample_rate: int = rates.SAMPLE_RATE
    image_size: int = 224          # frames are resized (squashed) to image_size x image_size in the decoder
    max_seconds: Seconds = 10.0    # longer clips are cut
    min_seconds: Seconds = 0.1     # shorter clips are rejected
    max_source_seconds: Seconds = 3 * 3600.0  # refuse to decode absurdly long sources (memory guard)
    min_decoded_share: float = 0.9  # a clip decoded to less of the length its headers state is `truncated_media`
    time_slack_s: Seconds = 0.1    # allowed gap between manifest times or stated lengths and the media (1 frame)

    def __post_init__(self) -> None:
        if not (self.fps > 0 and self.sample_rate > 0 and self.image_size > 0):
            raise ValueError(f"fps, sample_rate and image_size must be positive, got {self.fps}, "
                             f"{self.sample_rate}, {self.image_size}")
        if not 0 < self.min_seconds < self.max_seconds <= self.max_source_seconds:
            raise ValueError(f"need 0 < min_seconds < max_seconds <= max_source_seconds, got {self.min_seconds}, "
                             f"{self.max_seconds}, {self.max_source_seconds}")

    def to_dict(self) -> dict:
        return asdict(self)


def check_media_file(path: Path) -> str:
    """Reject a missing, empty or non-media file (a playlist, a concat list, unknown bytes); the container name."""
    if not path.is_file():
        raise Reject("missing_file", str(path))
    if path.stat().st_size == 0:
        raise Reject("empty_file", str(path))
    try:
        return sniff_container(path)
    except NotMedia as e:
        raise Reject(e.reason, e.detail) from None
    except OSError as e:
        raise Reject("unreadable_media", f"{path.name}: {e}") from None


class DecodeStage(Stage):
    """Manifest row -> row["frames"] uint8 [T_v, S, S, 3] (video tasks) and row["audio"] float32 [N] at 16 kHz."""

    name = "decode"

    def __init__(self, *, data_root: str, config: DecodeConfig = DecodeConfig(), streams: tuple = (),
                 native_frames: bool = False):
        super().__init__()
        self.data_root = str(data_root)
        self.config = config
        self.streams = tuple(streams)   # stages.frames.FrameNeed of the extra streams (lip, sync), read in one pass
        # frames decoded at their own size and squashed by stages.frames (as with extra streams), so a clip's CLIP
        # frames are the same pixels as in an output made with streams (generate follows the contract's "scaler")
        self.native_frames = native_frames or bool(self.streams)

    def _resolve(self, rel: Optional[str]) -> Optional[Path]:
        if rel is None:
            return None
        try:
            resolved = resolve_under_root(self.data_root, rel)
        except PathEscapesRoot as e:
            raise Reject("path_escapes_root", str(e)) from None
        except ValueError as e:
            raise Reject("bad_path", str(e)) from None
        if not isinstance(resolved, str):
            return resolved
        try:   # media on object storage: decoded from a local copy, deleted after the row
            local = fetch_media(resolved)
        except FileNotFoundError:
            raise Reject("missing_file", resolved) from None
        self._fetched.append(local)
        return local

    def _open(self, row: Row) -> tuple[Optional[VideoSource], AudioSource]:
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
                check_media_file(p)
        video = None
        if wants_video:
            # With extra streams the frames are decoded at their own size and shaped per stream (stages.frames).
            size = None if self.native_frames else cfg.image_size
            video = open_video(video_path, image_size=size, max_source_seconds=cfg.max_source_seconds)
        if audio_path is not None:
            audio = open_audio_file(audio_path, sample_rate=cfg.sample_rate,
                                    max_source_seconds=cfg.max_source_seconds)
        else:
            audio = ContainerAudio(video_path, cfg.sample_rate)
        return video, audio

    def process(self, row: Row) -> None:
        self._fetched: list[Path] = []
        try:
            self._decode(row)
        finally:
            for local in self._fetched:
                local.unlink(missing_ok=True)

    def _decode(self, row: Row) -> None:
        cfg = self.config
        problem = time_problem(row)
        if problem is not None:
            raise Reject(*problem)
        video, audio = self._open(row)
        rate = cfg.sample_rate
        start = float(row.get("start_s") or 0.0)
        stated_audio = audio.stated_samples / rate
        media_end = min(stated_audio, video.duration_s if video is not None else math.inf)
        end = media_end if row.get("end_s") is None else float(row["end_s"])
        if start >= media_end or end > media_end + cfg.time_slack_s:
            raise Reject("window_past_end", f"trim window [{start}, {row.get('end_s')}] s is not inside the media "
                         f"(audio {stated_audio:.3f} s, video {video.duration_s if video else None} s)")
        end = min(end, media_end)
        wanted = rates.frames_in(min(end - start, cfg.max_seconds), rate)
        first = int(round(start * rate))
        wave = audio.read(first, wanted)
        if not np.isfinite(wave).all():
            raise Reject("bad_samples", f"{int((~np.isfinite(wave)).sum())} NaN/Inf samples")
        truncated = self._check_decoded(len(wave), wanted)
        if len(wave) < wanted:  # the audio ended before its stated length (within slack, or flagged truncated)
            end = start + len(wave) / rate
        cut = end - start > cfg.max_seconds
        span = min(end - start, cfg.max_seconds)
        n_samples = rates.frames_in(span, rate)
        if span < cfg.min_seconds:
            raise Reject("too_short", f"usable span {max(span, 0.0):.3f}s < {cfg.min_seconds}s "
                         f"(audio {stated_audio:.3f}s, video {video.duration_s if video else None}s, start {start}s)")
        self._check_speech_span(row, end, start + span)
        row["audio"] = np.ascontiguousarray(wave[:n_samples], dtype=np.float32)
        self._frames(row, video, start, span)
        row.update(
            duration_s=n_samples / rate,
            audio_duration_s=(first + len(wave) if truncated else audio.known_samples) / rate,
            video_duration_s=video.duration_s if video is not None else None,
            source_sample_rate=audio.source_rate,
            source_channels=audio.source_channels,
            cut=bool(cut),
            truncated=truncated,
        )

    def _frames(self, row: Row, video: Optional[VideoSource], start: Seconds, span: Seconds) -> None:
        """row["frames"] uint8 [T_v, S, S, 3] at fps, and each extra stream's frames its task carries (else None)."""
        cfg = self.config
        row.update({need.key: None for need in self.streams}, frames=None)
        if video is None:
            return
        if not self.native_frames:
            times = rates.stream_times(start, span, cfg.fps)
            row["frames"] = video.frames(frame_indices_at(times, video.frame_starts_s))  # [T_v, S, S, 3] uint8
            return
        needs = [FrameNeed("frames", cfg.fps, "rgb", cfg.image_size)]
        needs += [need for need in self.streams if row["task"] in need.tasks]
        row.update(read_stream_frames(video.frames, video.frame_starts_s, start, span, needs))

    def _check_decoded(self, got: int, wanted: int) -> bool:
        """True when decoding stopped short of the stated length (flag); a Reject below min_decoded_share."""
        cfg = self.config
        if wanted - got <= cfg.time_slack_s * cfg.sample_rate:
            return False
        share = got / wanted
        if share < cfg.min_decoded_share:
            raise Reject("truncated_media", f"decoding stopped after {got / cfg.sample_rate:.3f} s of the "
                         f"{wanted / cfg.sample_rate:.3f} s its headers state (share {share:.2f} < "
                         f"{cfg.min_decoded_share}): a corrupt or cut file")
        return True

    def _check_speech_span(self, row: Row, clip_end: Seconds, kept_end: Seconds) -> None:
        """A speech task's span (media time) must end inside the decoded clip and start before the kept clip
        (cut to max_seconds) ends: a span outside it would be stretched over audio that holds no speech."""
        span_start, span_end = row.get("speech_start_s"), row.get("speech_end_s")
        if row["task"] not in SPEECH_TASKS or span_end is None:
            return
        span = f"speech span [{span_start}, {span_end}] s"
        if float(span_end) > clip_end + self.config.time_slack_s:
            raise Reject("speech_span_outside_clip", f"{span} ends after the decoded clip, which ends at "
                         f"{clip_end:.3f} s")
        if span_start is not None and float(span_start) >= kept_end:
            raise Reject("speech_span_outside_clip", f"{span} starts after the clip is cut at {kept_end:.3f} s "
                         f"(max_seconds {self.config.max_seconds})")
