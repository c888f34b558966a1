"""`pipeline export OUT --key K --out DIR`: a stored sample as files a person can play.

- `DIR/K.wav`: the stored audio (16 kHz, 16-bit), exactly the samples of `K.audio.flac`.
- `DIR/K.mp4`, when the sample has video and `--data-root` names the folder its source media are relative to: the
  source video over the sample's window (its `start_s` and length), re-encoded to H.264, with the stored audio as
  its sound. A mixture's picture is its sound source's video (read from the source output the recipe names), looped
  as the mixture looped that sound when the speech was longer.

The source media are found through the paths the sample's json recorded (never outside the data root).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

import numpy as np

from manifests.atomic import atomic_open, publish, temp_path
from manifests.errors import PipelineError, UsageError
from manifests.paths import resolve_under_root
from pipeline.api import Sample, open_output


class ExportError(PipelineError):
    """ffmpeg could not cut or mux the source video."""


def _ffmpeg() -> str:
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def write_wav(path: Path, wave: np.ndarray, rate: int) -> Path:
    import soundfile as sf

    with atomic_open(path, "wb") as f:
        sf.write(f, wave, rate, subtype="PCM_16", format="WAV")
    return path


def picture_source(sample: Sample) -> tuple[Optional[str], float, float, int]:
    """(the source video path as the json recorded it, the clip's start and length on it in seconds, how many times
    the clip repeats under the sample: a mixture tiles its sound clip when the speech is longer)."""
    recipe = sample.meta.get("recipe")
    if recipe is None:
        source = sample.meta.get("source") or {}
        return source.get("video_path"), float(source.get("start_s") or 0.0), float(sample.meta["duration_s"]), 1
    shard = Path(recipe["sound_shard"])
    sound = open_output(shard.parent.parent)[recipe["sound_key"]]   # OUT/shards/NAME.tar -> OUT
    video, start, length, _ = picture_source(sound)
    return video, start, length, int(recipe.get("sound_repeats") or 1)


def _run_ffmpeg(args: list[str], out: Path, what: str) -> Path:
    tmp = temp_path(out)
    result = subprocess.run([_ffmpeg(), "-y", "-v", "error", *args, "-f", "mp4", str(tmp)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ffmpeg could not {what}: {result.stderr.strip()[-500:]}")
    return publish(tmp, out)


def mux_window(video: Path, start: float, length: float, loops: int, wav: Path, out: Path) -> Path:
    """The clip (`length` seconds of `video` from `start`, repeated `loops` times) with `wav` as its sound, cut to
    the wav's length."""
    clip = _run_ffmpeg(["-ss", f"{start:.6f}", "-t", f"{length:.6f}", "-i", str(video), "-map", "0:v:0", "-an",
                        "-c:v", "libx264", "-pix_fmt", "yuv420p"], out.with_name(out.stem + ".picture.mp4"),
                       f"cut {video} at {start:.3f} s for {length:.3f} s")
    try:
        loop = ["-stream_loop", str(loops - 1)] if loops > 1 else []
        return _run_ffmpeg([*loop, "-i", str(clip), "-i", str(wav), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                            "-c:a", "aac", "-shortest"], out, f"add {wav} to the picture of {video}")
    finally:
        clip.unlink(missing_ok=True)


def export_sample(out_dir: Path, key: str, dest: Path, *, data_root: Optional[Path] = None) -> dict[str, Any]:
    """Write DEST/KEY.wav (and DEST/KEY.mp4 when the sample has video and data_root is given); say what was made."""
    sample = open_output(out_dir)[key]
    if sample.audio is None:
        raise UsageError(f"sample {key} has no audio member")
    dest = Path(dest)
    wav = write_wav(dest / f"{key}.wav", sample.audio, sample.sample_rate)
    made: dict[str, Any] = {"wav": str(wav), "mp4": None, "note": None}
    if not sample.meta.get("has_video"):
        return made
    video, start, length, loops = picture_source(sample)
    if video is None:
        made["note"] = "the sample's json records no source video"
    elif data_root is None:
        made["note"] = f"no MP4: give --data-root, the folder {video} is relative to"
    else:
        try:
            path = resolve_under_root(Path(data_root), video)
        except ValueError as e:
            raise UsageError(f"source video {video!r}: {e}") from None
        if not path.is_file():
            raise UsageError(f"source video {path} not found: is {data_root} the data root the job read?")
        made["mp4"] = str(mux_window(path, start, length, loops, wav, dest / f"{key}.mp4"))
    return made
