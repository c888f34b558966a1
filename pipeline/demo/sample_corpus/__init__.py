"""A small, real, learnable corpus of media files for tests, demos and benchmarks.

`make_sample_corpus(out_dir)` writes real media under `out_dir/media/`, a manifest `out_dir/manifest.parquet`
(paths relative to `out_dir`, the data root) and `out_dir/expected.json`, which says what the pipeline must do
with every row:

    {"v2s_redcircle_mp4_000": {"outcome": "ok", "task": "v2s", "cut": false, "sound_class": "redcircle", ...},
     "bad_truncated":         {"outcome": "reject", "stage": "decode", "reason": "unreadable_media"}, ...}

Good rows carry notes (`cut` for clips over 10 s, `vfr`, `rotation_deg`, `duration_s`, `sample_rate`,
`channels`, `container`, and the content truth: `sound_class`, `tone_hz`, `onsets_s`).

The content is learnable, so a model trained on it has something to find:
  - v2s: a shape whose colour and form decide its sound (`SOUND_CLASSES`) bounces and flashes exactly when
    a percussive burst of that sound starts.
  - visual_tts: a drawn face whose mouth opening follows the amplitude envelope of espeak-ng speech.
  - tts: espeak-ng speech only, several voices and speeds.
  - joint: a talking face beside a bouncing shape; speech mixed over the shape's sound.

Frames are drawn with numpy and piped to ffmpeg as rawvideo; speech comes from the espeak-ng binary.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import soundfile as sf

from manifests.schema import Clip, write_manifest

WIDTH, HEIGHT = 160, 120
SPEECH_RATE = 22050  # espeak-ng's output rate
MAX_SECONDS = 10.0  # DESIGN §5 default: longer clips are cut
VOICES = ("en-us", "en+f3", "en+m3", "en-gb")


@dataclass(frozen=True)
class SoundClass:
    """What a v2s shape looks like and sounds like. `tone_hz` None means noise bursts."""

    shape: str
    rgb: tuple[int, int, int]
    tone_hz: Optional[float]
    harmonics: tuple[float, ...] = (1.0,)  # amplitude of harmonic k+1


SOUND_CLASSES: dict[str, SoundClass] = {
    "redcircle": SoundClass("circle", (230, 40, 40), 220.0),
    "greensquare": SoundClass("square", (40, 200, 60), 440.0, (1.0, 0.0, 1 / 3, 0.0, 1 / 5)),
    "bluetriangle": SoundClass("triangle", (60, 90, 240), 880.0, (1.0, 0.0, 1 / 9)),
    "hatched": SoundClass("hatched", (225, 225, 225), None),
}

# Onset timing of v2s sounds (seconds): first burst, gaps between bursts, decay of sound and of flash.
FIRST_ONSET_S = (0.1, 0.35)
ONSET_GAP_S = (0.4, 0.8)
SOUND_DECAY_S = 0.12
FLASH_DECAY_S = 0.15  # long enough that the 10 fps frame after a hit still shows the flash

TRANSCRIPTS_SPECIAL = (
    "The café on Main Street opens at 8 o'clock.",
    "A naïve robot bought 3 apples for $5.",
    "Zoë paid $12 for the crème brûlée.",
    "Call me at 10:30, not 11.",
)
TRANSCRIPTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Please bring the red cup to the kitchen.",
    "It is going to rain later today.",
    "She sells sea shells by the sea shore.",
    "We will meet again next Tuesday.",
    "Turn left at the second traffic light.",
    "The garden looks lovely in the spring.",
    "My brother plays the violin every evening.",
    "Open the window, it is warm in here.",
    "How many birds are sitting on the wire?",
    "The train leaves in 15 minutes.",
    "Put 2 spoons of sugar in my tea.",
    "That old clock still keeps perfect time.",
    "Nobody expected the concert to end so early.",
    "Bring your umbrella, just in case.",
    "The library closes at noon on Sundays.",
    "A small boat drifted slowly across the lake.",
    "Her new bicycle is painted bright yellow.",
    "They counted 7 stars above the hill.",
    "Coffee tastes better on a cold morning.",
)

# container key -> (file suffix, video codec args, audio codec args)
_CONTAINERS: dict[str, tuple[str, list[str], list[str]]] = {
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
_BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact"]


# ----------------------------------------------------------------------------------------------- tools


@dataclass(frozen=True)
class _Tools:
    ffmpeg: str
    espeak: str


def find_tools() -> _Tools:
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
    return _Tools(ffmpeg=ffmpeg, espeak=espeak)


def _run(cmd: list[str], *, stdin: bytes | None = None, what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, input=stdin, capture_output=True)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace")[-1500:]
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}) {what}: {tail}")
    return proc


# ----------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class MediaFormat:
    container: str  # key of _CONTAINERS
    sample_rate: int
    channels: int
    fps: Optional[str] = None  # "25", "30000/1001", "30"; None for audio files


@dataclass(frozen=True)
class SampleSpec:
    """One clip to make: its manifest identity, media format and content parameters."""

    clip_id: str
    task: str
    variant: str
    split: str
    seed: int
    media: Optional[MediaFormat] = None
    duration_s: float = 3.0
    sound: Optional[str] = None  # key of SOUND_CLASSES
    voice: Optional[str] = None
    speed_wpm: int = 160
    pitch: int = 50
    transcript: Optional[str] = None
    lead_text: Optional[str] = None  # another utterance before the row's one; the row is trimmed to its own
    vfr: bool = False
    rotate: bool = False
    separate_audio: bool = False
    audio_s: Optional[float] = None  # audio length when it differs from the video's
    trim: bool = False
    bad: Optional[tuple[str, str]] = None  # expected (stage, reason)


_V2S_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("mp4", dict(media=MediaFormat("mp4", 44100, 2, "25"))),
    ("mkv6ch", dict(media=MediaFormat("mkv", 48000, 6, "30000/1001"))),
    ("webmvp9", dict(media=MediaFormat("webm_vp9", 48000, 2, "30"), duration_s=2.5)),
    ("webmvp8", dict(media=MediaFormat("webm_vp8", 22050, 1, "25"))),
    ("vfr", dict(media=MediaFormat("mp4", 16000, 1, "30"), vfr=True)),
    ("rotated", dict(media=MediaFormat("mp4", 48000, 2, "30"), rotate=True, duration_s=2.0)),
    ("sepaudio", dict(media=MediaFormat("mp4", 96000, 8, "25"), separate_audio=True)),
    ("avmismatch", dict(media=MediaFormat("mkv_pcm", 8000, 1, "25"), duration_s=3.0, audio_s=2.2)),
    ("short", dict(media=MediaFormat("mp4", 48000, 1, "30"), duration_s=0.6)),
    ("long", dict(media=MediaFormat("mp4", 44100, 1, "25"), duration_s=12.0)),
    ("trim", dict(media=MediaFormat("mp4", 48000, 2, "30000/1001"), duration_s=4.0, trim=True)),
]
_VTTS_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("mp4", dict(media=MediaFormat("mp4", 16000, 1, "25"))),
    ("mkv", dict(media=MediaFormat("mkv", 48000, 2, "30"))),
    ("webmvp9", dict(media=MediaFormat("webm_vp9", 48000, 1, "30000/1001"))),
    ("mp4trim", dict(media=MediaFormat("mp4", 44100, 1, "30"), trim=True)),
    ("webmvp8", dict(media=MediaFormat("webm_vp8", 22050, 1, "25"))),
]
_TTS_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("wav22k", dict(media=MediaFormat("wav", 22050, 1))),
    ("flac16k", dict(media=MediaFormat("flac", 16000, 1))),
    ("wav8k", dict(media=MediaFormat("wav", 8000, 1))),
    ("flac44k", dict(media=MediaFormat("flac", 44100, 2))),
    ("wav48ktrim", dict(media=MediaFormat("wav", 48000, 1), trim=True)),
    ("wav16kf32", dict(media=MediaFormat("wav_f32", 16000, 1))),
]
_JOINT_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("mp4", dict(media=MediaFormat("mp4", 48000, 2, "25"))),
    ("mkv", dict(media=MediaFormat("mkv", 44100, 1, "30000/1001"))),
    ("webm", dict(media=MediaFormat("webm_vp9", 48000, 2, "30"))),
]


def _good_specs(seed: int, rep: int) -> list[SampleSpec]:
    rng = np.random.default_rng([seed, rep])
    classes = list(SOUND_CLASSES)
    class_order = [classes[i] for i in rng.permutation(len(classes))]
    voice_order = [VOICES[i] for i in rng.permutation(len(VOICES))]
    texts = [TRANSCRIPTS[i] for i in rng.permutation(len(TRANSCRIPTS))]
    if rep == 0:  # the first copy always shows non-ASCII text, numbers and currency
        texts = list(TRANSCRIPTS_SPECIAL) + texts
    else:
        pool = TRANSCRIPTS_SPECIAL + TRANSCRIPTS
        texts = [pool[i] for i in rng.permutation(len(pool))]
    n_text = 0

    def next_text() -> str:
        nonlocal n_text
        n_text += 1
        return texts[(n_text - 1) % len(texts)]

    specs: list[SampleSpec] = []

    def add(task: str, variant: str, name: str, opts: dict[str, Any], **content: Any) -> None:
        specs.append(SampleSpec(
            clip_id=f"{task}_{name}_{variant}_{rep:03d}", task=task, variant=variant,
            split="test" if rng.random() < 0.2 else "train", seed=int(rng.integers(2**31)), **opts, **content,
        ))

    for i, (variant, opts) in enumerate(_V2S_VARIANTS):
        sound = class_order[i % len(classes)]
        add("v2s", variant, sound, opts, sound=sound)
    speech_variants = [("tts", _TTS_VARIANTS), ("visual_tts", _VTTS_VARIANTS), ("joint", _JOINT_VARIANTS)]
    for k, (task, variants) in enumerate(speech_variants):
        for i, (variant, opts) in enumerate(variants):
            voice = voice_order[(i + k) % len(VOICES)]
            content: dict[str, Any] = dict(
                voice=voice, speed_wpm=int(rng.integers(130, 191)), pitch=int(rng.integers(35, 66)),
                transcript=next_text(),
            )
            if opts.get("trim"):
                content["lead_text"] = next_text()
            if task == "joint":
                content["sound"] = class_order[(i + 1) % len(classes)]
            add(task, variant, voice.replace("-", "").replace("+", ""), opts, **content)
    return specs


def _bad_specs(seed: int) -> list[SampleSpec]:
    def bad(clip_id: str, task: str, stage: str, reason: str, **kw: Any) -> SampleSpec:
        return SampleSpec(clip_id=clip_id, task=task, variant=clip_id, split="train",
                     seed=zlib.crc32(f"{seed}/{clip_id}".encode()), bad=(stage, reason), **kw)

    text = "This sentence is perfectly fine."
    return [
        bad("bad_missing_file", "tts", "decode", "missing_file", transcript=text),
        bad("bad_truncated", "v2s", "decode", "unreadable_media"),
        bad("bad_random_bytes", "v2s", "decode", "unreadable_media"),
        bad("bad_empty_file", "v2s", "decode", "empty_file"),
        bad("bad_no_audio", "v2s", "decode", "no_audio"),
        bad("bad_no_video", "visual_tts", "decode", "no_video", transcript=text),
        bad("bad_too_short", "tts", "decode", "too_short", transcript="Hi."),
        bad("bad_single_frame", "v2s", "decode", "single_frame_video"),
        bad("bad_nan_samples", "tts", "decode", "bad_samples", transcript=text),
        bad("bad_path_escape", "tts", "decode", "path_escapes_root", transcript=text),
        bad("bad_silent", "tts", "audio", "silent_audio", transcript=text),
        bad("bad_emoji_transcript", "tts", "phonemes", "no_phonemes", transcript="🙂🙂"),
        bad("bad_punct_transcript", "tts", "phonemes", "no_phonemes", transcript="?!..."),
        bad("bad_empty_transcript", "tts", "phonemes", "empty_transcript", transcript=""),
    ]


def plan_sample_corpus(*, seed: int = 0, scale: int = 1, include_bad: bool = True) -> list[SampleSpec]:
    """The clips to make, in manifest order: a pure function of the arguments."""
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    specs = [s for rep in range(scale) for s in _good_specs(seed, rep)]
    return specs + (_bad_specs(seed) if include_bad else [])


# ----------------------------------------------------------------------------------------------- drawing

_Y, _X = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((_X - cx) / rx) ** 2 + ((_Y - cy) / max(ry, 1e-3)) ** 2 <= 1.0


def _shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    dx, dy = _X - cx, _Y - cy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape in ("square", "hatched"):
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    if shape == "triangle":  # apex up, base 0.8 r below the centre
        return (dy >= -r) & (dy <= 0.8 * r) & (np.abs(dx) <= (dy + r) / 1.8)
    raise ValueError(f"unknown shape {shape!r}")


def _onsets(rng: np.random.Generator, duration_s: float) -> list[float]:
    onsets = [float(rng.uniform(*FIRST_ONSET_S))]
    while True:
        nxt = onsets[-1] + float(rng.uniform(*ONSET_GAP_S))
        if nxt > duration_s - 0.15:
            return [round(t, 4) for t in onsets]
        onsets.append(nxt)


def _bounce(t: float, onsets: list[float]) -> tuple[float, float]:
    """(height in [0, 1] above the floor, flash in [0, 1]) at time t: the shape lands on every onset."""
    prev = max((o for o in onsets if o <= t), default=None)
    nxt = min((o for o in onsets if o > t), default=None)
    flash = 0.0 if prev is None else float(np.exp(-(t - prev) / FLASH_DECAY_S))
    if nxt is None:
        return 0.0, flash  # resting after the last hit
    start = prev if prev is not None else nxt - 0.6
    gap = nxt - start
    u = (t - start) / gap
    return min(1.0, gap / 0.8) * 4 * u * (1 - u), flash


def _draw_sound_object(img: np.ndarray, cls: SoundClass, t: float, onsets: list[float], *,
                       x_s: float, floor_y: float, r: float, lift: float) -> None:
    height, flash = _bounce(t, onsets)
    size = r * (1 + 0.3 * flash)
    cx, cy = x_s, floor_y - size - height * lift
    mask = _shape_mask(cls.shape, cx, cy, size)
    colour = np.array(cls.rgb, np.float32) * (0.5 + 0.5 * flash)
    if cls.shape == "hatched":
        stripes = ((_X + _Y) // 4) % 2 == 0
        img[mask & stripes] = colour.astype(np.uint8)
        img[mask & ~stripes] = (colour * 0.35).astype(np.uint8)
    else:
        img[mask] = colour.astype(np.uint8)


def _sound_frames(cls: SoundClass, onsets: list[float], times_s: np.ndarray, rng: np.random.Generator,
                  duration_s: float) -> np.ndarray:
    """[N, H, W, 3] uint8: a shape bouncing on a floor, hitting it (and flashing) at each onset."""
    bg = rng.integers(10, 45, size=3).astype(np.uint8)
    x0, x1 = rng.uniform(40, WIDTH - 40, size=2)
    floor_y = HEIGHT - 12
    frames = np.empty((len(times_s), HEIGHT, WIDTH, 3), np.uint8)
    for i, t in enumerate(times_s):
        img = frames[i]
        img[:] = bg
        img[floor_y:] = (90, 90, 90)
        x = x0 + (x1 - x0) * t / max(duration_s, 1e-3)
        _draw_sound_object(img, cls, float(t), onsets, x_s=x, floor_y=floor_y, r=20, lift=50)
    return frames


@dataclass
class _Face:
    skin: tuple[int, int, int]
    background: tuple[int, int, int]
    blinks_s: list[float] = field(default_factory=list)


def _face_for(voice: str, rng: np.random.Generator, duration_s: float) -> _Face:
    skins = [(235, 195, 160), (200, 150, 110), (160, 110, 80), (240, 210, 180)]
    backgrounds = [(170, 200, 230), (200, 230, 190), (230, 210, 170), (210, 190, 230)]
    k = VOICES.index(voice) if voice in VOICES else 0
    blinks = list(np.cumsum(rng.uniform(1.5, 3.0, size=int(duration_s / 1.5) + 1)))
    return _Face(skins[k], backgrounds[k], [b for b in blinks if b < duration_s])


def _draw_face(img: np.ndarray, face: _Face, t: float, mouth_open: float, *, cx: float, cy: float, s: float) -> None:
    """A face of scale s centred at (cx, cy); the mouth's dark opening grows with `mouth_open` in [0, 1]."""
    img[_ellipse(cx, cy, 36 * s, 45 * s)] = face.skin
    blink = any(0 <= t - b < 0.12 for b in face.blinks_s)
    for ex in (cx - 13 * s, cx + 13 * s):
        img[_ellipse(ex, cy - 13 * s, 4 * s, (0.6 if blink else 4) * s)] = (30, 30, 40)
    my = cy + 22 * s
    img[_ellipse(cx, my, 14 * s, (2.5 + 9 * mouth_open) * s)] = (170, 80, 90)
    if mouth_open > 0.08:
        img[_ellipse(cx, my, 11 * s, 8 * mouth_open * s)] = (50, 10, 20)


def _mouth_track(speech: np.ndarray, sr: int, times_s: np.ndarray) -> np.ndarray:
    """Mouth opening in [0, 1] per frame time: the speech RMS in a 50 ms window, relative to its loudest."""
    half = int(0.025 * sr)
    centres = np.clip((times_s * sr).astype(int), 0, len(speech))
    rms = np.array([np.sqrt(np.mean(speech[max(c - half, 0):c + half] ** 2)) if c < len(speech) else 0.0
                    for c in centres])
    ref = max(float(rms.max()), 1e-9)
    opening = np.clip(rms / (0.6 * ref), 0.0, 1.0)
    opening[rms < 0.1 * ref] = 0.0
    return opening


# ----------------------------------------------------------------------------------------------- sound


def _sound_track(cls: SoundClass, onsets: list[float], duration_s: float, sr: int,
                 rng: np.random.Generator) -> np.ndarray:
    """[n] float32: a percussive burst of the class's sound at every onset, over a faint noise floor."""
    n = int(round(duration_s * sr))
    out = np.zeros(n, np.float64)
    for on in onsets:
        i0 = int(round(on * sr))
        if i0 >= n:
            continue
        dt = np.arange(min(n - i0, sr)) / sr
        env = (1 - np.exp(-dt / 0.002)) * np.exp(-dt / SOUND_DECAY_S)
        if cls.tone_hz is None:
            wave = rng.standard_normal(len(dt)) * 0.5
        else:
            wave = sum(a * np.sin(2 * np.pi * cls.tone_hz * (k + 1) * dt)
                       for k, a in enumerate(cls.harmonics) if a and cls.tone_hz * (k + 1) < sr / 2)
        out[i0:i0 + len(dt)] += env * wave
    out *= 0.7 / max(np.abs(out).max(), 1e-9)
    out += 0.001 * rng.standard_normal(n)
    return out.astype(np.float32)


def _spread(mono: np.ndarray, channels: int) -> np.ndarray:
    """[n] -> [n, channels]: the same signal at different gains (a panned, not silent, layout)."""
    gains = np.array([1.0, 0.8, 0.9, 0.4, 0.6, 0.6, 0.5, 0.5][:channels], np.float32)
    return mono[:, None] * gains[None, :]


def _speak(tools: _Tools, tmp: Path, text: str, voice: str, speed_wpm: int, pitch: int) -> np.ndarray:
    """[n] float32 at 22050 Hz: espeak-ng speech with its leading and trailing silence cut to 20 ms."""
    path = tmp / f"speak_{zlib.crc32(f'{text}|{voice}|{speed_wpm}|{pitch}'.encode()):08x}.wav"
    _run([tools.espeak, "-v", voice, "-s", str(speed_wpm), "-p", str(pitch), "-w", str(path), "--stdin"],
         stdin=text.encode("utf-8"), what=f"speaking {text!r}")
    wave, sr = sf.read(path, dtype="float32")
    if sr != SPEECH_RATE or wave.ndim != 1 or len(wave) == 0:
        raise RuntimeError(f"espeak-ng wrote unexpected audio ({sr} Hz, shape {wave.shape}) for {text!r}")
    active = np.flatnonzero(np.abs(wave) > 0.02 * np.abs(wave).max())
    margin = int(0.02 * sr)
    return wave[max(active[0] - margin, 0):active[-1] + margin]


def _room_tone(n: int, rng: np.random.Generator) -> np.ndarray:
    return (0.001 * rng.standard_normal(n)).astype(np.float32)


# ----------------------------------------------------------------------------------------------- encoding


def _frame_times(fps: str, duration_s: float, vfr: bool) -> np.ndarray:
    if vfr:  # frame durations alternate 1/30 s and 2/30 s (the `setpts` expression in _encode_video)
        i = np.arange(int(duration_s * 20) + 2)
        t = np.floor(i / 2) * 0.1 + (i % 2) / 30
        return t[t < duration_s - 1e-6]
    rate = Fraction(fps)
    n = max(int(round(duration_s * rate)), 1)
    return np.arange(n) / float(rate)


def _write_wav(path: Path, audio: np.ndarray, sr: int, subtype: str = "PCM_16") -> None:
    sf.write(path, np.clip(audio, -1, 1) if subtype == "PCM_16" else audio, sr, subtype=subtype)


def _encode_audio(tools: _Tools, path: Path, audio: np.ndarray, source_sr: int, media: MediaFormat, tmp: Path) -> None:
    """audio [n] or [n, ch] float at source_sr -> an audio file in media's format, rate and channels."""
    src = tmp / f"{path.stem}_src.wav"
    _write_wav(src, audio, source_sr)
    _, _, acodec = _CONTAINERS[media.container]
    _run([tools.ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), *acodec,
          "-ar", str(media.sample_rate), "-ac", str(media.channels), *_BITEXACT, str(path)],
         what=f"writing {path.name}")


def _encode_video(tools: _Tools, path: Path, frames: np.ndarray, media: MediaFormat, tmp: Path, *,
                  audio: Optional[np.ndarray] = None, audio_sr: int = 0, vfr: bool = False) -> None:
    """frames [N, H, W, 3] uint8 (+ audio [n, ch] float at audio_sr) -> a video file in media's container."""
    _, vcodec, acodec = _CONTAINERS[media.container]
    fps = "30" if vfr else media.fps
    cmd = [tools.ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-framerate", fps, "-i", "-"]
    if audio is not None:
        src = tmp / f"{path.stem}_mux.wav"
        _write_wav(src, audio, audio_sr)
        cmd += ["-i", str(src), "-map", "0:v:0", "-map", "1:a:0", *acodec, "-ar", str(media.sample_rate)]
    if vfr:
        cmd += ["-vf", "setpts=round((floor(N/2)*0.1+(N-2*floor(N/2))/30)/TB)", "-fps_mode", "vfr"]
    cmd += [*vcodec, *_BITEXACT, str(path)]
    _run(cmd, stdin=np.ascontiguousarray(frames).tobytes(), what=f"writing {path.name}")


def _set_rotation(tools: _Tools, src: Path, dst: Path, degrees: int) -> None:
    """Remux with display-rotation metadata (ffmpeg >= 6: -display_rotation; older: the rotate tag)."""
    base = [tools.ffmpeg, "-hide_banner", "-loglevel", "error", "-y"]
    modern = base + ["-display_rotation:v:0", str(degrees), "-i", str(src), "-map", "0", "-c", "copy", str(dst)]
    legacy = base + ["-i", str(src), "-map", "0", "-c", "copy", "-metadata:s:v:0", f"rotate={degrees}", str(dst)]
    if subprocess.run(modern, capture_output=True).returncode != 0:
        _run(legacy, what=f"rotating {dst.name}")
    info = subprocess.run([tools.ffmpeg, "-hide_banner", "-i", str(dst)], capture_output=True).stderr.decode()
    if "rotation of" not in info:
        raise RuntimeError(f"{tools.ffmpeg} did not write rotation metadata into {dst.name}")


def _video_frame_pts_s(ffmpeg: str, path: Path) -> list[float]:
    """Presentation times (s) of the first video stream's packets, sorted, read with ffmpeg's framemd5."""
    out = _run([ffmpeg, "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:v:0", "-c", "copy",
                "-f", "framemd5", "-"], what=f"probing {path.name}").stdout.decode()
    tb = next(Fraction(line.split(":")[1].strip()) for line in out.splitlines() if line.startswith("#tb 0"))
    pts = sorted(int(line.split(",")[2]) for line in out.splitlines() if line and not line.startswith("#"))
    return [float(p * tb) for p in pts]


# ----------------------------------------------------------------------------------------------- renderers


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _media_notes(spec: SampleSpec, duration_s: float) -> dict[str, Any]:
    m = spec.media
    return {"outcome": "ok", "task": spec.task, "cut": duration_s > MAX_SECONDS, "duration_s": round(duration_s, 3),
            "container": m.container, "sample_rate": m.sample_rate, "channels": m.channels,
            "fps": "vfr" if spec.vfr else m.fps, "vfr": spec.vfr, "rotation_deg": 90 if spec.rotate else 0}


def _render_v2s(spec: SampleSpec, tools: _Tools, root: Path, tmp: Path) -> tuple[Clip, dict[str, Any]]:
    rng = np.random.default_rng(spec.seed)
    cls = SOUND_CLASSES[spec.sound]
    audio_s = spec.audio_s or spec.duration_s
    onsets = _onsets(rng, min(spec.duration_s, audio_s))
    frames = _sound_frames(cls, onsets, _frame_times(spec.media.fps, spec.duration_s, spec.vfr), rng, spec.duration_s)
    sr = spec.media.sample_rate
    audio = _spread(_sound_track(cls, onsets, audio_s, sr, rng), spec.media.channels)
    suffix = _CONTAINERS[spec.media.container][0]
    video = root / "media" / "v2s" / f"{spec.clip_id}{suffix}"
    audio_path = None
    if spec.separate_audio:
        audio_path = video.with_suffix(".wav")
        _write_wav(audio_path, audio, sr)
        _encode_video(tools, video, frames, spec.media, tmp)
    elif spec.rotate:
        plain = tmp / f"{spec.clip_id}_plain{suffix}"
        _encode_video(tools, plain, frames, spec.media, tmp, audio=audio, audio_sr=sr)
        _set_rotation(tools, plain, video, 90)
    else:
        _encode_video(tools, video, frames, spec.media, tmp, audio=audio, audio_sr=sr, vfr=spec.vfr)
    if spec.vfr and len(set(np.round(np.diff(_video_frame_pts_s(tools.ffmpeg, video)), 4))) < 2:
        raise RuntimeError(f"{video.name} came out with a constant frame rate; expected variable")
    start_s = end_s = None
    if spec.trim:
        start_s = round(float(rng.uniform(0.3, 0.8)), 3)
        end_s = round(start_s + float(rng.uniform(2.0, 2.8)), 3)
    clip = Clip(clip_id=spec.clip_id, task="v2s", dataset="synth_sound", split=spec.split,
                video_path=_rel(video, root), audio_path=_rel(audio_path, root) if audio_path else None,
                start_s=start_s, end_s=end_s)
    notes = _media_notes(spec, spec.duration_s)
    notes.update(sound_class=spec.sound, tone_hz=cls.tone_hz, onsets_s=onsets, separate_audio=spec.separate_audio,
                 audio_duration_s=round(audio_s, 3))
    return clip, notes


def _speech_layout(spec: SampleSpec, tools: _Tools, tmp: Path, rng: np.random.Generator,
                   ) -> tuple[np.ndarray, float, float]:
    """Speech track [n] at 22050 Hz (row utterance, after `lead_text` if any) and the row utterance's span (s)."""
    speech = _speak(tools, tmp, spec.transcript, spec.voice, spec.speed_wpm, spec.pitch)
    lead = int(rng.uniform(0.2, 0.45) * SPEECH_RATE)
    parts = [np.zeros(lead, np.float32)]
    if spec.lead_text:
        parts += [_speak(tools, tmp, spec.lead_text, spec.voice, spec.speed_wpm, spec.pitch),
                  np.zeros(int(0.7 * SPEECH_RATE), np.float32)]
    start = sum(len(p) for p in parts)
    parts += [speech, np.zeros(int(0.3 * SPEECH_RATE), np.float32)]
    track = np.concatenate(parts)
    track *= 0.7 / max(np.abs(track).max(), 1e-9)
    return track, start / SPEECH_RATE, (start + len(speech)) / SPEECH_RATE


def _render_tts(spec: SampleSpec, tools: _Tools, root: Path, tmp: Path) -> tuple[Clip, dict[str, Any]]:
    rng = np.random.default_rng(spec.seed)
    track, s0, s1 = _speech_layout(spec, tools, tmp, rng)
    track += _room_tone(len(track), rng)
    path = root / "media" / "tts" / f"{spec.clip_id}{_CONTAINERS[spec.media.container][0]}"
    _encode_audio(tools, path, track, SPEECH_RATE, spec.media, tmp)
    start_s, end_s = (round(s0 - 0.15, 3), round(s1 + 0.15, 3)) if spec.trim else (None, None)
    clip = Clip(clip_id=spec.clip_id, task="tts", dataset="synth_voices", split=spec.split, audio_path=_rel(path, root),
                transcript=spec.transcript, speaker=spec.voice, start_s=start_s, end_s=end_s)
    return clip, _media_notes(spec, len(track) / SPEECH_RATE)


def _render_face_video(spec: SampleSpec, tools: _Tools, root: Path, tmp: Path) -> tuple[Clip, dict[str, Any]]:
    """visual_tts and joint: a talking face (joint: beside a bouncing sound shape, sounds mixed)."""
    rng = np.random.default_rng(spec.seed)
    speech, s0, s1 = _speech_layout(spec, tools, tmp, rng)
    duration_s = len(speech) / SPEECH_RATE
    times = _frame_times(spec.media.fps, duration_s, False)
    opening = _mouth_track(speech, SPEECH_RATE, times)
    face = _face_for(spec.voice, rng, duration_s)
    joint = spec.task == "joint"
    cls = SOUND_CLASSES[spec.sound] if joint else None
    onsets = _onsets(rng, duration_s) if joint else []
    sway = rng.uniform(0, 2 * np.pi)
    frames = np.empty((len(times), HEIGHT, WIDTH, 3), np.uint8)
    for i, t in enumerate(times):
        frames[i] = face.background
        dx = 3 * np.sin(2 * np.pi * t / 2.5 + sway)
        if joint:
            frames[i, HEIGHT - 10:, 100:] = (90, 90, 90)
            _draw_sound_object(frames[i], cls, float(t), onsets, x_s=132, floor_y=HEIGHT - 10, r=10, lift=45)
            _draw_face(frames[i], face, float(t), float(opening[i]), cx=52 + dx, cy=62, s=0.75)
        else:
            _draw_face(frames[i], face, float(t), float(opening[i]), cx=80 + dx, cy=58, s=1.0)
    audio = speech
    if joint:
        audio = speech + 0.35 * _sound_track(cls, onsets, duration_s, SPEECH_RATE, rng)[: len(speech)]
    audio = audio + _room_tone(len(audio), rng)
    folder = "joint" if joint else "visual_tts"
    path = root / "media" / folder / f"{spec.clip_id}{_CONTAINERS[spec.media.container][0]}"
    _encode_video(tools, path, frames, spec.media, tmp, audio=_spread(audio, spec.media.channels),
                  audio_sr=SPEECH_RATE)
    start_s, end_s = (round(s0 - 0.15, 3), round(s1 + 0.15, 3)) if spec.trim else (None, None)
    clip = Clip(clip_id=spec.clip_id, task=spec.task, dataset="synth_joint" if joint else "synth_faces",
                split=spec.split, video_path=_rel(path, root), transcript=spec.transcript, speaker=spec.voice,
                start_s=start_s, end_s=end_s,
                speech_start_s=round(s0, 3) if joint else None, speech_end_s=round(s1, 3) if joint else None)
    notes = _media_notes(spec, duration_s)
    notes.update(speech_span_s=[round(s0, 3), round(s1, 3)])
    if joint:
        notes.update(sound_class=spec.sound, tone_hz=cls.tone_hz, onsets_s=onsets)
    return clip, notes


def _render_bad(spec: SampleSpec, tools: _Tools, root: Path, tmp: Path) -> tuple[Clip, dict[str, Any]]:
    rng = np.random.default_rng(spec.seed)
    folder = root / "media" / "bad"
    name = spec.clip_id.removeprefix("bad_")
    reason = spec.bad[1]
    video = audio = None
    v2s_media = MediaFormat("mp4", 44100, 1, "25")
    cls = SOUND_CLASSES["redcircle"]

    def sound_video(duration_s: float, path: Path, *, with_audio: bool) -> Path:
        onsets = _onsets(rng, duration_s)
        frames = _sound_frames(cls, onsets, _frame_times("25", duration_s, False), rng, duration_s)
        track = _sound_track(cls, onsets, duration_s, 44100, rng)[:, None] if with_audio else None
        _encode_video(tools, path, frames, v2s_media, tmp, audio=track, audio_sr=44100)
        return path

    def speech_wav() -> Path:
        path = folder / "speech_ok.wav"
        if not path.exists():
            wave = _speak(tools, tmp, "This sentence is perfectly fine.", "en-us", 160, 50)
            _write_wav(path, 0.7 * wave / np.abs(wave).max(), SPEECH_RATE)
        return path

    if reason == "missing_file":
        audio = folder / "missing.wav"
    elif spec.clip_id == "bad_truncated":  # no moov atom: the index sits at the end of a non-faststart mp4
        whole = sound_video(3.0, tmp / "whole.mp4", with_audio=True).read_bytes()
        video = folder / f"{name}.mp4"
        video.write_bytes(whole[: int(0.3 * len(whole))])
    elif spec.clip_id == "bad_random_bytes":
        video = folder / f"{name}.mp4"
        video.write_bytes(rng.bytes(20000))
    elif reason == "empty_file":
        video = folder / f"{name}.mp4"
        video.write_bytes(b"")
    elif reason == "no_audio":
        video = sound_video(2.0, folder / f"{name}.mp4", with_audio=False)
    elif reason == "no_video":
        audio = speech_wav()
    elif reason == "too_short":
        audio = folder / f"{name}.wav"
        t = np.arange(int(0.05 * 16000)) / 16000
        _write_wav(audio, 0.5 * np.sin(2 * np.pi * 300 * t), 16000)
    elif reason == "single_frame_video":
        video = folder / f"{name}.mp4"
        frames = _sound_frames(cls, [0.2], np.zeros(1), rng, 1.0)
        _encode_video(tools, video, frames, v2s_media, tmp,
                      audio=_sound_track(cls, [0.2], 1.0, 44100, rng)[:, None], audio_sr=44100)
    elif reason == "bad_samples":
        audio = folder / f"{name}.wav"
        wave, _ = sf.read(speech_wav(), dtype="float32")
        wave[1000:1100] = np.nan
        wave[5000:5010] = np.inf
        _write_wav(audio, wave, SPEECH_RATE, subtype="FLOAT")
    elif reason == "path_escapes_root":
        audio = None  # written below as a literal relative path; nothing is created outside the root
    elif reason == "silent_audio":
        audio = folder / f"{name}.wav"
        _write_wav(audio, np.zeros(2 * 16000, np.float32), 16000)
    elif reason in ("no_phonemes", "empty_transcript"):
        audio = speech_wav()
    else:
        raise AssertionError(f"no recipe for {spec.clip_id}")
    audio_rel = "../outside.wav" if reason == "path_escapes_root" else (_rel(audio, root) if audio else None)
    clip = Clip(clip_id=spec.clip_id, task=spec.task, dataset="synth_bad", split=spec.split,
                video_path=_rel(video, root) if video else None, audio_path=audio_rel,
                transcript=spec.transcript, speaker="en-us" if spec.transcript is not None else None)
    return clip, {"outcome": "reject", "task": spec.task, "stage": spec.bad[0], "reason": reason}


_RENDERERS = {"v2s": _render_v2s, "tts": _render_tts, "visual_tts": _render_face_video, "joint": _render_face_video}


def make_sample_corpus(out_dir: Path, *, seed: int = 0, scale: int = 1, include_bad: bool = True,
                       progress: Optional[Callable[[str], None]] = None) -> Path:
    """Write media, `manifest.parquet` and `expected.json` under out_dir (the data root); return the manifest path.

    scale multiplies the good clips (about 25 per unit: every kind again with fresh content). The same seed gives
    the same manifest rows with the same tools; media bytes may differ between ffmpeg versions.
    """
    out_dir = Path(out_dir)
    specs = plan_sample_corpus(seed=seed, scale=scale, include_bad=include_bad)
    tools = find_tools()
    for sub in ("v2s", "visual_tts", "tts", "joint", "bad"):
        (out_dir / "media" / sub).mkdir(parents=True, exist_ok=True)
    clips: list[Clip] = []
    expected: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sample_corpus_") as tmp_name:
        tmp = Path(tmp_name)
        for spec in specs:
            render = _render_bad if spec.bad else _RENDERERS[spec.task]
            clip, notes = render(spec, tools, out_dir, tmp)
            clips.append(clip)
            expected[clip.clip_id] = notes
            if progress is not None:
                progress(clip.clip_id)
    tmp_json = out_dir / ".expected.json.tmp"
    tmp_json.write_text(json.dumps(expected, indent=1, sort_keys=True, ensure_ascii=False), encoding="utf-8")
    tmp_json.replace(out_dir / "expected.json")
    return write_manifest(clips, out_dir / "manifest.parquet")
