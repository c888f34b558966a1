"""Readers behind the decode stage: a video's frames and stated length, and audio as 16 kHz mono over a window.

Two kinds of audio source, one interface (`AudioSource`): `first`/`count` are sample indices on the 16 kHz
timeline of the whole source, and `read` returns exactly what resampling the whole source and slicing would
(fewer samples when the file ends early).

- `AudioFile` (what libsndfile reads: WAV, FLAC, Ogg, ...): the header is trusted for nothing but where to look.
  Only the window that will be kept is read (plus a margin for the resampler), in blocks that are downmixed as
  they come, so memory is bounded by the window, whatever length, rate or channel count the header claims.
- `ContainerAudio` (an audio track inside a video container, or formats libsndfile lacks): FFmpeg inside decord
  decodes the track, downmixed and resampled to 16 kHz mono as it goes (64 kB per second of audio actually
  present, never more per channel or per claimed second), then the window is sliced out.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from manifests.media_sniff import stated_track_durations
from stages.base import Reject

MAX_SOURCE_RATE = 768_000  # Hz: higher claims are refused (no real recording needs more)
BLOCK_SAMPLES = 1 << 20  # samples (frames x channels) read at a time from an audio file: at most 4 MB of float32
BLOCK_FRAMES = 1 << 14  # and at most this many frames, so a read that fails keeps what decoded before it
RESAMPLE_MARGIN_S = 0.05  # source read on each side of the window: far beyond the resampler's filter (< 1 ms)


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


def resampled_length(frames: int, from_rate: int, to_rate: int) -> int:
    """Samples torchaudio's resample gives for `frames` input samples: ceil(frames x to / from)."""
    g = math.gcd(from_rate, to_rate)
    return -(-frames * (to_rate // g) // (from_rate // g))


# ----------------------------------------------------------------------------------------------------------------------
# Video


@dataclass
class VideoSource:
    reader: Any  # decord.VideoReader, frames resized to image_size x image_size (or native)
    frame_starts_s: np.ndarray  # [N] presentation time of each frame
    duration_s: float  # end of the last frame, from the container's index (its stated length)

    def frames(self, indices: np.ndarray) -> np.ndarray:
        """uint8 [T, S, S, 3] of the given frame indices; a stream that fails mid-way is unreadable."""
        try:
            return self.reader.get_batch(indices.tolist()).asnumpy()
        except Exception as e:  # noqa: BLE001 - a container that opens but fails mid-stream is truncated or corrupt
            raise Reject("unreadable_media", f"frames: {type(e).__name__}: {e}") from None


def open_video(path: Path, *, image_size: Optional[int], max_source_seconds: float) -> VideoSource:
    """The video of `path`, frames squashed to image_size x image_size by the decoder (None: native size)."""
    import decord

    side = -1 if image_size is None else image_size
    try:
        # num_threads=1: decord's threaded decoder fails on VP9 ("Error sending packet", EAGAIN).
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), width=side, height=side, num_threads=1)
        n = len(reader)
        stamps = reader.get_frame_timestamp(np.arange(n)) if n else np.zeros((0, 2))
    except Exception as e:  # noqa: BLE001 - decord raises plain errors for corrupt containers
        if "cannot find video stream" in str(e):
            raise Reject("no_video", f"{path.name} has no video stream (an audio-only file on a video task)") from None
        raise Reject("unreadable_media", f"video: {type(e).__name__}: {str(e)[:300]}") from None
    if n == 0:
        raise Reject("unreadable_media", "video stream has no decodable frames")
    if n == 1:
        raise Reject("single_frame_video", str(path))
    duration = float(stamps[-1, 1])
    if duration > max_source_seconds:
        raise Reject("source_too_long", f"{duration:.0f}s > {max_source_seconds:.0f}s")
    return VideoSource(reader, stamps[:, 0].astype(np.float64), duration)


# ----------------------------------------------------------------------------------------------------------------------
# Audio


class AudioSource(abc.ABC):
    sample_rate: int  # the output rate (16 kHz)
    stated_samples: int  # length the header states, on the output timeline (what decoding should reach)
    known_samples: int  # length known without reading it all: decoded (containers) or stated (audio files)
    source_rate: Optional[int] = None  # native rate and channels, where the reader knows them
    source_channels: Optional[int] = None

    @abc.abstractmethod
    def read(self, first: int, count: int) -> np.ndarray:
        """float32 [<= count]: output samples first .. first + count of the whole source (fewer at its end)."""


class ContainerAudio(AudioSource):
    """The audio track of a container, decoded whole by FFmpeg (inside decord) at the output rate, mono.

    Only decord's mono path is used: decord 0.6's multichannel resampling returns garbage samples (seen as ~1e38
    values on 48 kHz stereo Opus). The stated length is the longest audio track's header duration where the
    container states one (ISO-BMFF), else what was decoded.
    """

    def __init__(self, path: Path, sample_rate: int):
        import decord

        self.sample_rate = sample_rate
        try:
            reader = decord.AudioReader(str(path), ctx=decord.cpu(0), sample_rate=sample_rate, mono=True)
            wave = reader[:].asnumpy()[0]  # [N] at the target rate
        except Exception as e:  # noqa: BLE001
            message = str(e)
            if "audio stream" in message.lower() or "no audio" in message.lower():
                raise Reject("no_audio", f"{path.name} has no audio track and the row has no audio_path") from None
            raise Reject("unreadable_media", f"audio: {type(e).__name__}: {message[:300]}") from None
        if wave.size == 0:
            raise Reject("no_audio", f"{path.name} has an empty audio track")
        self._wave = wave.astype(np.float32, copy=False)
        stated = stated_track_durations(path).get("audio")
        self.known_samples = len(wave)
        self.stated_samples = max(len(wave), int(round(stated * sample_rate))) if stated else len(wave)

    def read(self, first: int, count: int) -> np.ndarray:
        return self._wave[first:first + count]


class AudioFile(AudioSource):
    """An audio file libsndfile reads, read only over the requested window (see the module docstring)."""

    def __init__(self, path: Path, info: Any, sample_rate: int):
        self.path, self.sample_rate = path, sample_rate
        self.source_rate, self.source_channels = int(info.samplerate), int(info.channels)
        if not 0 < self.source_rate <= MAX_SOURCE_RATE or self.source_channels < 1:
            raise Reject("unreadable_media", f"{path.name} claims {self.source_rate} Hz, {self.source_channels} "
                                             f"channels (at most {MAX_SOURCE_RATE} Hz)")
        self.frames = int(info.frames)
        self.stated_samples = self.known_samples = resampled_length(self.frames, self.source_rate, sample_rate)

    def read(self, first: int, count: int) -> np.ndarray:
        rate, out_rate = self.source_rate, self.sample_rate
        g = math.gcd(rate, out_rate)
        step_in, step_out = rate // g, out_rate // g  # the resampler's phase repeats every step_in input samples
        margin = int(math.ceil(RESAMPLE_MARGIN_S * rate))
        k = max(0, (first * rate // out_rate - margin) // step_in)  # start on a phase boundary: same filter taps
        a = k * step_in
        b = min(self.frames, -(-(first + count) * rate // out_rate) + margin)
        chunk = self._read_mono(a, max(0, b - a))  # shorter when the file ends before its header says
        out = resample(chunk, rate, out_rate) if len(chunk) else np.zeros(0, np.float32)
        offset = first - k * step_out
        return np.ascontiguousarray(out[offset:offset + count], dtype=np.float32)

    def _read_mono(self, start: int, frames: int) -> np.ndarray:
        """Source frames start .. start + frames, downmixed block by block: float32 [<= frames]."""
        import soundfile as sf

        block = max(1, min(BLOCK_FRAMES, BLOCK_SAMPLES // self.source_channels))
        parts, left = [], frames
        try:
            with sf.SoundFile(str(self.path)) as f:
                f.seek(start)
                while left > 0:
                    data = f.read(min(block, left), dtype="float32", always_2d=True)  # [n, C]
                    if len(data) == 0:
                        break
                    parts.append(downmix(data.T))
                    left -= len(data)
        except (sf.LibsndfileError, RuntimeError) as e:  # opens, then fails to seek or read: corrupt or cut
            if not parts:
                raise Reject("unreadable_media", f"audio: {type(e).__name__}: {str(e)[:300]}") from None
            # what decoded before the damage is returned; decode compares it with the stated length
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def open_audio_file(path: Path, *, sample_rate: int, max_source_seconds: float) -> AudioSource:
    """An audio file: through libsndfile when it reads the format, else through FFmpeg (m4a, ...)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - formats libsndfile lacks go through FFmpeg
        return ContainerAudio(path, sample_rate)
    if info.duration > max_source_seconds:
        raise Reject("source_too_long", f"{info.duration:.0f}s > {max_source_seconds:.0f}s")
    if info.frames <= 0:
        raise Reject("too_short", "audio file has no samples")
    return AudioFile(path, info, sample_rate)
