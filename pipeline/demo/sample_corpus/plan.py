"""What the sample corpus holds: one SampleSpec per clip, planned from the seed before any file is written.

The plan fixes every choice that is not drawn from a clip's own seed: the media format of each variant, which
sound class, voice, speed, pitch and transcript a clip gets, its split and its seed; and, for the hostile rows,
the stage and reason the pipeline must reject them with. hostile.py says how each hostile file is made.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

VOICES = ("en-us", "en+f3", "en+m3", "en-gb")  # espeak-ng voices; each has its own face colours
PLAIN_SENTENCE = "This sentence is perfectly fine."  # text and speech of hostile rows whose fault is elsewhere


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


@dataclass(frozen=True)
class MediaFormat:
    container: str  # key of encode.CONTAINERS
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
    """Copy `rep` of the good clips: every task and variant once, the choices drawn from (seed, rep)."""
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
    """The hostile rows, each with the (stage, reason) the pipeline must reject it with."""

    def bad(clip_id: str, task: str, stage: str, reason: str, **kw: Any) -> SampleSpec:
        return SampleSpec(clip_id=clip_id, task=task, variant=clip_id, split="train",
                          seed=zlib.crc32(f"{seed}/{clip_id}".encode()), bad=(stage, reason), **kw)

    text = PLAIN_SENTENCE
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
        bad("bad_no_face", "visual_tts", "lip", "no_face", transcript=text),
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

