"""Feature-level speech-plus-sound mixtures (docs/design.md, "Mixtures"): a recipe is data, rendering is a pure function.

A `MixRecipe` names its two sources (shard + key), the speech offset, the speech-to-sound ratio and the
visual mode; it is sampled on the driver from a generator seeded by (seed, mixture index), so results do
not depend on scheduling. `render_mixture` turns a recipe and its two decoded source samples into the
mixture's features with the same audio code as extract (loudness, PCM16, FLAC, log-mel):

- audio is mixed as waveforms (mel and latents are not additive): the sound is scaled so that
  loudness(speech) - loudness(sound) = snr_db, the sum is re-normalised to the target loudness;
- the offset lies on the 10 fps video grid, so the speech's visual rows land exactly on mixture rows;
- a speech clip longer than the sound gets offset 0 and the sound is repeated (audio and video) to cover it;
- visual features over the speech span: `add` (sum), `insert` (replace) or `sound_only` (keep the sound's);
  TTS speech has no video, so only `sound_only` applies;
- `insert` also replaces the sound's audio under the speech span (recipes of version 2; version-1 recipes, made
  before, keep the sound under the speech and re-render exactly as they were);
- the lip, sync and speaker conditions follow the speech source (`stages.mix_streams`);
- phoneme ids are kept; the speech span moves by the offset.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from stages.audio import (
    LogMel,
    LoudnessConfig,
    MelConfig,
    decode_flac,
    encode_flac,
    measure_loudness,
    normalize_loudness,
    quantize_pcm16,
)
from stages.base import Reject, Row, Stage
from stages.format import rates
from stages.format.contract import STREAM_ROW_KEYS
from stages.format.layout import shard_problem
from stages.format.shard_io import ShardReader, decode_sample
from stages.mix_streams import mix_streams, speech_mask

Seconds = float
Decibels = float
RECIPE_VERSION = 2            # 2: `insert` replaces the sound's audio under the speech span
RECIPE_VERSIONS = (1, 2)      # version-1 recipes (made before) render as they always did
MODES = ("add", "insert", "sound_only")
SNR_DB_RANGE = (-30.0, 60.0)   # beyond it one source is inaudible (or clipped away): not a mixture any more


@dataclass(frozen=True, kw_only=True)
class MixConfig:
    snr_db_min: Decibels = 0.0
    snr_db_max: Decibels = 15.0
    mode_weights: dict = field(default_factory=lambda: {"add": 1.0, "insert": 1.0, "sound_only": 1.0})

    def __post_init__(self):
        unknown = set(self.mode_weights) - set(MODES)
        if unknown:
            raise ValueError(f"mode_weights names unknown modes {sorted(unknown)}; modes are {MODES}")
        bad = {m: w for m, w in self.mode_weights.items() if not (math.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"mode_weights must be finite and >= 0, got {bad}")
        if not any(w > 0 for w in self.mode_weights.values()):
            raise ValueError(f"mode_weights must give some mode a weight > 0, got {self.mode_weights}")
        for name in ("snr_db_min", "snr_db_max"):
            value = getattr(self, name)
            if not (math.isfinite(value) and SNR_DB_RANGE[0] <= value <= SNR_DB_RANGE[1]):
                raise ValueError(f"{name} must be a finite SNR in [{SNR_DB_RANGE[0]:g}, {SNR_DB_RANGE[1]:g}] dB, "
                                 f"got {value}")
        if self.snr_db_min > self.snr_db_max:
            raise ValueError(f"snr_db_min {self.snr_db_min} > snr_db_max {self.snr_db_max}")


@dataclass(frozen=True, kw_only=True)
class MixRecipe:
    key: str
    seed: int
    index: int
    speech_key: str
    speech_shard: str
    sound_key: str
    sound_shard: str
    offset_s: Seconds
    snr_db: Decibels
    mode: str
    schema_version: int = RECIPE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MixRecipe":
        if data.get("schema_version", RECIPE_VERSION) not in RECIPE_VERSIONS:
            raise ValueError(f"mix recipe schema_version {data.get('schema_version')} is not one of "
                             f"{RECIPE_VERSIONS}")
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def mixture_key(seed: int, index: int) -> str:
    return f"mix_s{seed}_{index:09d}"


def pick_sources(seed: int, index: int, n_speech: int, n_sound: int) -> tuple[int, int]:
    """Mixture `index` -> (speech, sound) positions. Each pool is walked in a fresh seeded permutation per pass,
    so every source is used once before any is used twice (as evenly as the counts allow)."""
    def pick(stream: int, n: int) -> int:
        epoch, slot = divmod(index, n)
        return int(np.random.default_rng([seed, stream, epoch]).permutation(n)[slot])

    return pick(0, n_speech), pick(1, n_sound)


def sample_recipe(*, seed: int, index: int, speech: dict, sound: dict, config: MixConfig,
                  video_fps: float) -> MixRecipe:
    """speech/sound: index rows with key, shard (absolute), duration_s, has_video."""
    rng = np.random.default_rng([seed, index, 2])
    slack = sound["duration_s"] - speech["duration_s"]
    steps = rates.frames_in(slack, video_fps) if slack > 0 else 0
    offset_s = int(rng.integers(0, steps + 1)) / video_fps
    snr_db = float(rng.uniform(config.snr_db_min, config.snr_db_max))
    weights = {m: w for m, w in config.mode_weights.items() if w > 0 and (speech["has_video"] or m == "sound_only")}
    if not weights:  # TTS speech with sound_only weighted 0: the only honest mode is still sound_only
        weights = {"sound_only": 1.0}
    modes = sorted(weights)
    p = np.array([weights[m] for m in modes], dtype=np.float64)
    mode = modes[int(rng.choice(len(modes), p=p / p.sum()))]
    return MixRecipe(key=mixture_key(seed, index), seed=seed, index=index, speech_key=speech["key"],
                     speech_shard=speech["shard"], sound_key=sound["key"], sound_shard=sound["shard"],
                     offset_s=offset_s, snr_db=round(snr_db, 6), mode=mode)


def _source_rows(times_s: np.ndarray, duration_s: float, n_rows: int, fps: float) -> np.ndarray:
    """Source video row shown at each mixture time, repeating the source past its end."""
    return np.clip(np.floor(np.mod(times_s, duration_s) * fps + 1e-6).astype(np.int64), 0, n_rows - 1)


def render_mixture(recipe: MixRecipe, speech: dict, sound: dict, *, logmel: LogMel, loudness: LoudnessConfig,
                   video_fps: float, streams: Optional[dict] = None, speaker: Optional[dict] = None) -> dict[str, Any]:
    """Decoded source samples (stages.shard_io.decode_sample) -> the mixture's features and metadata; `streams`
    and `speaker` are the contract's extra streams and speaker reference (stages.mix_streams)."""
    rate = logmel.config.sample_rate
    sp, sp_rate = decode_flac(speech["flac"])
    so, so_rate = decode_flac(sound["flac"])
    if sp_rate != rate or so_rate != rate:
        raise Reject("bad_source", f"source rates {sp_rate}/{so_rate} != {rate}")
    if sound["arrays"]["video"] is None:
        raise Reject("bad_source", f"sound {recipe.sound_key} has no video features")
    if speech["arrays"]["phones"] is None:
        raise Reject("bad_source", f"speech {recipe.speech_key} has no phonemes")
    offset_n = int(round(recipe.offset_s * rate))
    n_mix = max(len(so), offset_n + len(sp))
    repeats = -(-n_mix // len(so))
    sound_wave = np.tile(so, repeats)[:n_mix]                                          # [n_mix]
    speech_wave = np.zeros(n_mix, np.float32)
    speech_wave[offset_n:offset_n + len(sp)] = sp                                      # [n_mix]

    speech_lufs = measure_loudness(sp, rate)
    sound_lufs = measure_loudness(sound_wave, rate)
    if not (math.isfinite(speech_lufs) and math.isfinite(sound_lufs)):
        raise Reject("silent_source", f"speech {speech_lufs} LUFS, sound {sound_lufs} LUFS")
    sound_gain_db = speech_lufs - recipe.snr_db - sound_lufs
    a, b = speech["meta"].get("speech_span_s") or [0.0, speech["meta"]["duration_s"]]
    if recipe.mode == "insert" and recipe.schema_version >= 2:   # the speech replaces the sound under its span
        sound_wave = sound_wave * speech_mask(n_mix, rate, recipe.offset_s + a, recipe.offset_s + b)
    mixed = (speech_wave.astype(np.float64) + sound_wave * 10 ** (sound_gain_db / 20)).astype(np.float32)
    mixed, info = normalize_loudness(mixed, rate, loudness)
    wave = quantize_pcm16(mixed)
    duration = n_mix / rate

    sound_video = sound["arrays"]["video"]                                             # [T_so, D]
    n_rows = rates.frames_in(duration, video_fps)
    times = np.arange(n_rows) / video_fps
    video = sound_video[_source_rows(times, sound["meta"]["duration_s"], len(sound_video), video_fps)]  # [T_v, D]
    speech_video = speech["arrays"]["video"]
    if recipe.mode != "sound_only":
        if speech_video is None:
            raise Reject("bad_source", f"mode {recipe.mode} needs speech video; {recipe.speech_key} has none")
        start = int(round(recipe.offset_s * video_fps))
        k = max(0, min(len(speech_video), n_rows - start))
        if recipe.mode == "add":
            video[start:start + k] = (video[start:start + k].astype(np.float32)
                                      + speech_video[:k].astype(np.float32)).astype(np.float16)
        else:
            video[start:start + k] = speech_video[:k]

    meta = {
        "clip_id": recipe.key, "task": "joint", "dataset": "synth_mix", "split": speech["meta"].get("split"),
        "speaker": speech["meta"].get("speaker"), "transcript": speech["meta"].get("transcript"),
        "phonemes": speech["meta"].get("phonemes"), "speech_span_s": [recipe.offset_s + a, recipe.offset_s + b],
        "has_video": True, "duration_s": duration, "cut": False, "silent": False,
        "loudness_lufs": info.measured_lufs, "gain_db": info.gain_db, "peak_limited": info.peak_limited,
        "recipe": {**recipe.to_dict(), "speech_lufs": speech_lufs, "sound_lufs": sound_lufs,
                   "speech_gain_db": 0.0, "sound_gain_db": sound_gain_db, "mix_gain_db": info.gain_db,
                   "sound_repeats": repeats,
                   "sources": {"speech": {"dataset": speech["meta"].get("dataset"), "task": speech["meta"]["task"]},
                               "sound": {"dataset": sound["meta"].get("dataset"), "task": sound["meta"]["task"]}}},
    }
    conditions = mix_streams(speech, sound, streams=streams, speaker=speaker, mode=recipe.mode,
                             offset_s=recipe.offset_s, span_s=(a, b), duration_s=duration)
    return {"meta_json": json.dumps(meta, allow_nan=False), "audio": wave, "flac": encode_flac(wave, rate),
            "mel": logmel(wave).astype(np.float16), "video": video, "phone_ids": speech["arrays"]["phones"],
            "duration_s": duration, **{STREAM_ROW_KEYS[member]: a for member, a in conditions.items()}}


class MixStage(Stage):
    """Recipe row -> mixture features. Sources are read by key from their shards (headers scanned once)."""

    name = "mix"

    def __init__(self, *, mel: MelConfig, loudness: LoudnessConfig, video_fps: float,
                 shard_checks: Optional[dict[str, tuple]] = None, streams: Optional[dict] = None,
                 speaker: Optional[dict] = None):
        super().__init__()
        self.mel, self.loudness, self.video_fps = mel, loudness, video_fps
        self.streams, self.speaker = streams, speaker   # the sources' contract: extra streams, speaker reference
        self.shard_checks = dict(shard_checks or {})   # shard path -> (size, sha256) recorded by its ledger

    def setup(self) -> None:
        self.logmel = LogMel(self.mel)
        self.reader = ShardReader()
        self.shard_problems: dict[str, Optional[str]] = {}   # each source shard is checked once per worker

    def load(self, shard: str, key: str) -> dict:
        if shard not in self.shard_problems:
            size, sha256 = self.shard_checks.get(shard, (None, None))
            self.shard_problems[shard] = shard_problem(shard, size, sha256, checksum=True)
        problem = self.shard_problems[shard]
        if problem == "missing":
            raise Reject("missing_source", f"{key}: shard {shard} is missing")
        if problem:
            raise Reject("broken_source", f"{key} in {shard}: {problem}")
        try:
            return decode_sample(self.reader.read(shard, key))
        except (FileNotFoundError, KeyError) as e:
            raise Reject("missing_source", str(e)) from None
        except Exception as e:  # noqa: BLE001 - a truncated shard or a corrupt member
            raise Reject("broken_source", f"{key} in {shard}: {type(e).__name__}: {e}") from None

    def process(self, row: Row) -> None:
        recipe = MixRecipe.from_dict(row)
        speech = self.load(recipe.speech_shard, recipe.speech_key)
        sound = self.load(recipe.sound_shard, recipe.sound_key)
        row.update(render_mixture(recipe, speech, sound, logmel=self.logmel, loudness=self.loudness,
                                  video_fps=self.video_fps, streams=self.streams, speaker=self.speaker))
