"""One sample for training: contract check, audio representation, normalisation, crop; then padded batches.

Audio representation. "mel": the shard's log-mel [T_m, 64] at 100/s patched 4 frames at a time to [T_m // 4, 256]
at 25/s (`model.batch.patch_mel`). "latent": the VAE posterior [T_l, 2C] at 25/s, either sampled
(mean + exp(logvar / 2) * eps, the default: the model sees the posterior's spread, as a VAE-based diffusion model
does) or its mean (`latent_sample=False`, deterministic). Either way the values are standardised with one scalar
mean and std (`audio_mean`, `audio_std`, estimated from the training data by `estimate_audio_norm` and stored in the
checkpoint), so the flow starts from N(0, I) noise at the data's scale.

Crops. A clip longer than the model's window (max_video_frames / video_fps seconds) is cut to a random window that
starts on a frame of both timelines (multiples of 0.2 s at 25/s and 10/s); its phoneme track is stretched over the
whole speech span first and then cut, so the visible phones are the ones spoken in the window.

Streams. The temporal streams the model takes (`streams`, the model config's) are resampled to the audio frames by
presentation time (`model.batch.resample_stream`) before the crop, so the crop cuts them with the audio; the speaker
reference (`speaker`) is the sample's utterance embedding. A sample whose task carries no such stream has it masked.

Every random choice (crop start, latent draw) comes from the generator the caller passes: the stream seeds one per
sample (model/data/stream.py), so a sample is prepared the same way whatever worker reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from model.batch import collate, patch_mel, resample_stream, span_frames, stretch_phones
from stages.format.contract import AUDIO_REPRS, ContractError, FeatureContract, check_sample
from stages.format.rates import AUDIO_FPS


@dataclass(frozen=True, kw_only=True)
class SamplePrep:
    """Decoded shard sample -> the dict `model.batch.collate` takes (plus "key", and "phones_track" when cropped)."""

    contract: FeatureContract
    audio_repr: str = "mel"
    latent_sample: bool = True
    audio_mean: float = 0.0
    audio_std: float = 1.0
    max_audio_frames: int = 250
    max_video_frames: int = 100
    audio_fps: float = AUDIO_FPS
    streams: tuple = ()                 # the temporal streams the model takes, by name (its config's)
    speaker: bool = False               # whether it takes the speaker reference

    def __post_init__(self) -> None:
        object.__setattr__(self, "streams", tuple(sorted(self.streams)))
        carried = sorted(self.contract.streams or {}) + (["speaker"] if self.contract.speaker else [])
        missing = [name for name in self.streams + (("speaker",) if self.speaker else ()) if name not in carried]
        if missing:
            raise ContractError(f"the model takes {', '.join(missing)}, which these shards do not carry (they carry "
                                f"{', '.join(carried) or 'no extra conditions'}): re-extract with them, or train a "
                                f"model built without them")
        if self.audio_repr not in AUDIO_REPRS:
            raise ValueError(f"audio_repr must be one of {AUDIO_REPRS}, got {self.audio_repr!r}")
        if self.audio_repr == "latent" and not self.contract.latent:
            raise ContractError("audio_repr 'latent' needs shards with VAE latents; these were extracted without "
                                "(re-extract with --vae, or train on 'mel')")
        if not self.audio_std > 0:
            raise ValueError(f"audio_std must be > 0, got {self.audio_std}")
        for name, fps in (("audio_fps", self.audio_fps), ("video_fps", self.contract.video_fps)):
            if float(fps) != int(fps):
                raise ValueError(f"{name} {fps} must be a whole number of frames per second")

    @property
    def stream_layout(self) -> dict[str, tuple]:
        """{name: (frame shape, numpy dtype)} of the streams the model takes, for `model.batch.collate`."""
        records = self.contract.streams or {}
        return {name: (tuple(records[name]["frame_shape"]), np.dtype(records[name]["dtype"])) for name in self.streams}

    @property
    def ref_dim(self) -> Optional[int]:
        return int(self.contract.speaker["dim"]) if self.speaker else None

    @property
    def audio_dim(self) -> int:
        return self.contract.audio_dim(self.audio_repr)

    def check(self, decoded: dict[str, Any], where: str = "") -> None:
        problems = check_sample(decoded["meta"], decoded["arrays"], self.contract)
        if problems:
            raise ContractError(f"{where}sample {decoded['key']!r} does not honour dataset.json: {'; '.join(problems)}")

    def raw_audio(self, arrays: dict[str, Any], rng: Optional[np.random.Generator]) -> np.ndarray:
        """[T, A] float32 at audio_fps, not standardised; latents sampled with rng (None: the posterior mean)."""
        if self.audio_repr == "mel":
            return patch_mel(arrays["mel"], self.contract.n_mels).numpy()            # [T_m // 4, 4 * n_mels]
        latent = arrays["latent"].astype(np.float32)                                 # [T_l, 2C]
        mean, logvar = np.split(latent, 2, axis=1)                                   # [T_l, C] each
        if rng is None or not self.latent_sample:
            return mean
        return (mean + np.exp(0.5 * logvar) * rng.standard_normal(mean.shape, dtype=np.float32)).astype(np.float32)

    def __call__(self, decoded: dict[str, Any], rng: np.random.Generator, where: str = "") -> dict[str, Any]:
        self.check(decoded, where)
        meta, arrays = decoded["meta"], decoded["arrays"]
        audio = (self.raw_audio(arrays, rng) - self.audio_mean) / self.audio_std     # [T, A]
        video = arrays["video"]                                                      # [T_v, D] float16 or None
        sample = {"key": decoded["key"], "task": meta["task"], "audio": audio.astype(np.float32), "video": video,
                  "phone_ids": arrays["phones"], "speech_span_s": meta.get("speech_span_s"),
                  "streams": self.audio_rate_streams(arrays, len(audio)),
                  "speaker": arrays.get("speaker") if self.speaker else None}
        return self.crop(sample, rng)

    def audio_rate_streams(self, arrays: dict[str, Any], n_frames: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{name: (frames [n_frames, ...], mask [n_frames])} of the streams the model takes that the sample has."""
        out = {}
        for name in self.streams:
            if arrays.get(name) is not None:
                out[name] = resample_stream(arrays[name], arrays.get(f"{name}_valid"),
                                            float(self.contract.streams[name]["fps"]), n_frames, self.audio_fps)
        return out

    def crop(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        audio, video = sample["audio"], sample["video"]
        n_audio, n_video = len(audio), 0 if video is None else len(video)
        if n_audio <= self.max_audio_frames and n_video <= self.max_video_frames:
            return sample
        video_fps = self.contract.video_fps
        unit = math.gcd(int(self.audio_fps), int(video_fps))          # crop starts every 1/unit s (0.2 s)
        unit_audio, unit_video = int(self.audio_fps) // unit, int(video_fps) // unit
        window_s = min(self.max_audio_frames / self.audio_fps, self.max_video_frames / video_fps)
        keep_audio = min(n_audio, int(window_s * self.audio_fps))
        k = int(rng.integers(0, max(0, (n_audio - keep_audio) // unit_audio) + 1))
        a0, v0 = k * unit_audio, k * unit_video
        out = dict(sample, audio=audio[a0:a0 + keep_audio], phone_ids=None, speech_span_s=None,
                   streams={name: (rows[a0:a0 + keep_audio], mask[a0:a0 + keep_audio])
                            for name, (rows, mask) in sample["streams"].items()})
        if video is not None:
            out["video"] = video[v0:v0 + int(window_s * video_fps)]
        if sample["phone_ids"] is not None:
            span = sample["speech_span_s"]
            start, end = (0, n_audio) if span is None else span_frames(span, self.audio_fps)
            track = stretch_phones(sample["phone_ids"], n_audio, start, end)            # [n_audio]
            out["phones_track"] = track[a0:a0 + keep_audio]
        return out


def prep_for_model(contract: FeatureContract, model_cfg: Any, *, audio_repr: str, audio_mean: float,
                   audio_std: float, latent_sample: bool = True) -> SamplePrep:
    """The SamplePrep that feeds a network of config `model_cfg` (a DiTConfig) from shards of `contract`: its
    window, frame rate, streams and speaker."""
    return SamplePrep(contract=contract, audio_repr=audio_repr, latent_sample=latent_sample, audio_mean=audio_mean,
                      audio_std=audio_std, max_audio_frames=model_cfg.max_audio_frames,
                      max_video_frames=model_cfg.max_video_frames, audio_fps=model_cfg.audio_fps,
                      streams=tuple(model_cfg.streams), speaker=model_cfg.ref_token)


def make_batch(samples: Sequence[dict[str, Any]], prep: SamplePrep) -> dict[str, Any]:
    """`model.batch.collate` with the prep's streams and speaker, then the phone tracks of cropped samples (made
    before the crop) and the keys."""
    batch = collate(samples, audio_fps=prep.audio_fps, video_dim=prep.contract.video_dim, streams=prep.stream_layout,
                    ref_dim=prep.ref_dim)
    for i, s in enumerate(samples):
        if s.get("phones_track") is not None:
            batch["phones_track"][i, : len(s["phones_track"])] = s["phones_track"]
    batch["key"] = [s["key"] for s in samples]
    return batch
