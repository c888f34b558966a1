"""The outside tools (ffmpeg, espeak-ng) and the files written with them: audio, video, rotation, frame times.

Every encode passes `BITEXACT`, so the same frames and samples give the same bytes with the same ffmpeg.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf

from pipeline.demo.sample_corpus.plan import MediaFormat

# container key (MediaFormat.container) -> (file suffix, video codec args, audio codec args)
CONTAINERS: dict[str, tuple[str, list[str], list[str]]] = {
    "mp4": (".mp4", ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"], ["-c:a", "aac", "-b:a", "96k"]),
    "mkv": (".mkv", ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"], ["-c:a", "flac"]),
    "mkv_pcm": (".mkv", ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"], ["-c:a", "pcm_s16le"]),
    "webm_vp9": (".webm", ["-c:v", "libvpx-vp9", "-b:v", "300k", "-deadline", "realtime", "-cpu-used", "8"],
                 ["-c:a", "libopus", "-b:a", "64k"]),
    "webm_vp8": (".webm", ["-c:v", "libvpx", "-b:v", "300k", "-deadline", "realtime", "-cpu-used", "8"],
                 ["-c:a", "libvorbis", "-q:a", "4"]),
    "wav": (".wav", [], ["-c:a", "pcm_s16le"]),
    "wav_f32": (".wav", [], ["-c:a", "pcm_f32le"]),
    "flac": (".flac", [], ["-c:a", "flac"]),
}
BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact"]
# Variable frame rate: frame durations alternate 1/30 s and 2/30 s (frame_times draws at the same times).
VFR_SETPTS = "setpts=round((floor(N/2)*0.1+(N-2*floor(N/2))/30)/TB)"


@dataclass(frozen=True)
class Tools:
    ffmpeg: str
    espeak: str


def find_tools() -> Tools:
    """Locate ffmpeg (system, else the imageio-ffmpeg wheel's binary) and espeak-ng, or say how to get them."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        try:
            import imageio_ffmpeg

            ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError) as e:
            raise RuntimeError(
                "ffmpeg not found: install it with apt (apt-get install ffmpeg) or run scripts/setup.sh"
            ) from e
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError(
            "espeak-ng not found: install it with apt (apt-get install espeak-ng) or run scripts/setup.sh"
        )
    return Tools(ffmpeg=ffmpeg, espeak=espeak)


def run_tool(cmd: list[str], *, stdin: bytes | None = None, what: str) -> subprocess.CompletedProcess:
    """Run cmd; a non-zero exit raises with the tail of its stderr."""
    proc = subprocess.run(cmd, input=stdin, capture_output=True)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace")[-1500:]
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}) {what}: {tail}")
    return proc


def file_suffix(media: MediaFormat) -> str:
    return CONTAINERS[media.container][0]


def frame_times(fps: str, duration_s: float, vfr: bool) -> np.ndarray:
    """[N] presentation times (s) of the frames to draw: at fps, or the VFR_SETPTS pattern when vfr."""
    if vfr:
        i = np.arange(int(duration_s * 20) + 2)
        t = np.floor(i / 2) * 0.1 + (i % 2) / 30
        return t[t < duration_s - 1e-6]
    rate = Fraction(fps)
    n = max(int(round(duration_s * rate)), 1)
    return np.arange(n) / float(rate)


def write_wav(path: Path, audio: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
    sf.write(path, np.clip(audio, -1, 1) if subtype == "PCM_16" else audio, sr, subtype=subtype)


def encode_audio(tools: Tools, path: Path, audio: np.ndarray, source_sr: int, media: MediaFormat, tmp: Path) -> None:
    """audio [n] or [n, ch] float at source_sr -> an audio file in media's format, rate and channels."""
    src = tmp / f"{path.stem}_src.wav"
    write_wav(src, audio, source_sr)
    _, _, acodec = CONTAINERS[media.container]
    run_tool([tools.ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), *acodec,
              "-ar", str(media.sample_rate), "-ac", str(media.channels), *BITEXACT, str(path)],
             what=f"writing {path.name}")


def encode_video(tools: Tools, path: Path, frames: np.ndarray, media: MediaFormat, tmp: Path, *,
                 audio: Optional[np.ndarray] = None, audio_sr: int = 0, vfr: bool = False) -> None:
    """frames [N, H, W, 3] uint8 (+ audio [n, ch] float at audio_sr) -> a video file in media's container."""
    _, vcodec, acodec = CONTAINERS[media.container]
    fps = "30" if vfr else media.fps
    height, width = frames.shape[1:3]
    cmd = [tools.ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", fps, "-i", "-"]
    if audio is not None:
        src = tmp / f"{path.stem}_mux.wav"
        write_wav(src, audio, audio_sr)
        cmd += ["-i", str(src), "-map", "0:v:0", "-map", "1:a:0", *acodec, "-ar", str(media.sample_rate)]
    if vfr:
        cmd += ["-vf", VFR_SETPTS, "-fps_mode", "vfr"]
    cmd += [*vcodec, *BITEXACT, str(path)]
    run_tool(cmd, stdin=np.ascontiguousarray(frames).tobytes(), what=f"writing {path.name}")


def set_rotation(tools: Tools, src: Path, dst: Path, degrees: int) -> None:
    """Remux with display-rotation metadata (ffmpeg >= 6: -display_rotation; older: the rotate tag)."""
    base = [tools.ffmpeg, "-hide_banner", "-loglevel", "error", "-y"]
    modern = base + ["-display_rotation:v:0", str(degrees), "-i", str(src), "-map", "0", "-c", "copy", str(dst)]
    legacy = base + ["-i", str(src), "-map", "0", "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(dst)]
    if subprocess.run(modern, capture_output=True).returncode != 0:
        run_tool(legacy, what=f"rotating {dst.name}")
    info = subprocess.run([tools.ffmpeg, "-hide_banner", "-i", str(dst)], capture_output=True).stderr.decode()
    if "rotation of" not in info:
        raise RuntimeError(f"{tools.ffmpeg} did not write rotation metadata into {dst.name}")


def video_frame_pts_s(ffmpeg: str, path: Path) -> list[float]:
    """Presentation times (s) of the first video stream's packets, sorted, read with ffmpeg's framemd5."""
    out = run_tool([ffmpeg, "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy",
                    "-f", "framemd5", "-"], what=f"probing {path.name}").stdout.decode()
    tb = next(Fraction(line.split(":")[1].strip()) for line in out.splitlines() if line.startswith("#tb 0"))
    pts = sorted(int(line.split(",")[2]) for line in out.splitlines() if line and not line.startswith("#"))
    return [float(p * tb) for p in pts]
