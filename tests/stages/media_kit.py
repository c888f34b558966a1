"""Small media files made on the spot for the decode hardening tests, and a watch on a folder's file opens."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from pipeline.demo.sample_corpus.encode import find_tools

SR = 16000
IN_OPEN, IN_ACCESS, IN_NONBLOCK = 0x20, 0x01, 0o4000


def ffmpeg() -> str:
    return find_tools().ffmpeg


def tone_wav(path: Path, seconds: float, *, rate: int = SR, channels: int = 1, freq: float = 440.0) -> Path:
    t = np.arange(int(round(seconds * rate))) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t)
    sf.write(path, np.repeat(wave[:, None], channels, axis=1), rate, subtype="PCM_16")
    return path


def video(path: Path, seconds: float, *, audio: bool = True, faststart: bool = False, picture: bool = True) -> Path:
    """An H.264/AAC mp4 (testsrc picture, 440 Hz tone) of `seconds`, made with ffmpeg."""
    cmd = [ffmpeg(), "-v", "error", "-y"]
    if picture:
        cmd += ["-f", "lavfi", "-i", f"testsrc=size=160x120:rate=25:duration={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}:sample_rate=44100"]
    if picture:
        cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "25"]
    if audio:
        cmd += ["-c:a", "aac"]
    cmd += (["-movflags", "+faststart"] if faststart else []) + ["-fflags", "+bitexact", str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def sparse_wav(path: Path, seconds: float, *, rate: int, channels: int) -> Path:
    """A real PCM16 WAV of `seconds` of silence, written as a sparse file: a 44-byte header, then a hole. It takes
    a few kilobytes of disk whatever its length, and every sample it states is really there (zeros)."""
    data = int(seconds * rate) * channels * 2
    header = (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE" + b"fmt " +
              struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16) +
              b"data" + struct.pack("<I", data))
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + data)
    return path


class OpenWatch:
    """Every file opened inside one folder while the watch is on (Linux inotify): proof that nothing was read."""

    def __init__(self, folder: Path):
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = self._libc.inotify_init1(IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if self._libc.inotify_add_watch(self.fd, str(folder).encode(), IN_OPEN | IN_ACCESS) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")

    def opened(self) -> list[str]:
        """Names opened or read since the last call (each event once)."""
        names, data = [], b""
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            data += chunk
        pos = 0
        while pos + 16 <= len(data):
            _, _, _, length = struct.unpack("iIII", data[pos:pos + 16])
            names.append(data[pos + 16:pos + 16 + length].rstrip(b"\0").decode())
            pos += 16 + length
        return names

    def close(self) -> None:
        os.close(self.fd)
