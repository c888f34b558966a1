"""Audio features shared by extract, synth-mix and generate: loudness, PCM16/FLAC, log-mel (docs/design.md).

Plain functions first, so the mixing stage and `generate` derive features with exactly the same code;
`AudioFeatureStage` strings them together for extract. Every waveform here is float32 mono `[N]` at
`MelConfig.sample_rate` (16 kHz): decoding and resampling happen upstream.

The order inside the stage matters: loudness-normalise, quantise to the int16 grid, then take the mel of
the *quantised* wave. The FLAC stores exactly that wave, so the stored mel is the mel of the stored audio,
and a mixture re-derived from decoded FLACs starts from the very samples extract saw.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from manifests.tasks import SPEECH_TASKS
from stages.base import Reject, Row, Stage
from stages.format import rates

Decibels = float
Lufs = float

PCM16_SCALE = 32768.0  # int16 k <-> float k / 32768: exact both ways, the convention of quantize/encode/decode
FLAC_COMPRESSION_LEVEL = 0.625  # libsndfile's 0..1 scale: libFLAC level 5, its default; fixed so bytes are stable
LOUDNESS_MIN_SECONDS = 0.4  # BS.1770's gating block; shorter clips are measured tiled (see measure_loudness)


# ----------------------------------------------------------------------------------------------------------------------
# Log-mel


@dataclass(frozen=True, kw_only=True)
class MelConfig:
    """Log-mel parameters of the AudioLDM 16 kHz VAE and its HiFi-GAN vocoder, so their checkpoints fit."""

    sample_rate: int = rates.SAMPLE_RATE
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = rates.MEL_HOP
    n_mels: int = rates.MEL_BANDS
    f_min: float = 0.0
    f_max: float = 8000.0
    power: float = 1.0  # magnitude, not power
    norm: str = "slaney"
    mel_scale: str = "slaney"
    log_floor: float = 1e-5

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} > n_fft {self.n_fft}")
        if (self.n_fft - self.hop_length) % 2:
            raise ValueError(f"n_fft - hop_length must be even (symmetric padding), got {self.n_fft - self.hop_length}")
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got {self.f_min}, {self.f_max}")
        if self.log_floor <= 0:
            raise ValueError(f"log_floor must be > 0, got {self.log_floor}")

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def pad(self) -> int:
        """Samples of padding on each side: (n_fft - hop) / 2, so frame t covers [t*hop - pad, t*hop - pad + n_fft)."""
        return (self.n_fft - self.hop_length) // 2

    def num_frames(self, num_samples: int) -> int:
        """Mel frames for a wave of `num_samples`: exactly floor(N / hop)."""
        return num_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"frames_per_second": self.frames_per_second, "padding": "reflect"}


class LogMel:
    """Wave `[N]` -> log-mel `[floor(N / hop), n_mels]`, the AudioLDM recipe.

    Reflect-pad (n_fft - hop)/2 samples on each side, STFT without centring (Hann window), magnitude, Slaney mel
    filters, natural log of max(x, log_floor). Frame t is centred on sample t*hop + hop/2.

    Padding of very short waves: torch's reflect padding needs more samples than the pad (432 by default). For
    any length we use numpy's `reflect` mode, which equals torch's whenever torch's is possible and, for shorter
    waves, keeps reflecting back and forth (a repeated mirror image) instead of failing or inserting zeros.
    A wave shorter than one hop gives zero frames: `[0, n_mels]`.
    """

    def __init__(self, config: MelConfig = MelConfig()):
        import torchaudio

        self.config = config
        self._transform = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            win_length=config.win_length,
            hop_length=config.hop_length,
            f_min=config.f_min,
            f_max=config.f_max,
            n_mels=config.n_mels,
            power=config.power,
            norm=config.norm,
            mel_scale=config.mel_scale,
            center=False,
            pad=0,
        )

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        """`[N]` float -> `[floor(N / hop), n_mels]` float32."""
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"LogMel expects a mono wave [N], got shape {wave.shape}")
        return self.batch(wave[None])[0]

    def batch(self, waves: np.ndarray) -> np.ndarray:
        """Many waves of equal length: `[B, N]` -> `[B, floor(N / hop), n_mels]` float32 (same values as one by one)."""
        import torch

        waves = np.asarray(waves, dtype=np.float32)
        if waves.ndim != 2:
            raise ValueError(f"LogMel.batch expects [B, N], got shape {waves.shape}")
        cfg = self.config
        num_frames = cfg.num_frames(waves.shape[1])
        if num_frames == 0:
            return np.zeros((waves.shape[0], 0, cfg.n_mels), dtype=np.float32)
        padded = np.pad(waves, ((0, 0), (cfg.pad, cfg.pad)), mode="reflect")  # [B, N + n_fft - hop]
        with torch.inference_mode():
            mel = self._transform(torch.from_numpy(padded))  # [B, n_mels, T]
            log_mel = torch.log(torch.clamp(mel, min=cfg.log_floor)).transpose(1, 2)  # [B, T, n_mels]
        out = np.ascontiguousarray(log_mel.numpy(), dtype=np.float32)
        assert out.shape[1] == num_frames, (out.shape, num_frames)
        return out


# ----------------------------------------------------------------------------------------------------------------------
# Loudness


@dataclass(frozen=True, kw_only=True)
class LoudnessConfig:
    target_lufs: Lufs = -23.0
    peak_dbfs: Decibels = -1.0  # sample peak ceiling after normalisation
    silence_lufs: Lufs = -70.0  # integrated loudness below this is silence (BS.1770's absolute gate)
    remove_dc: bool = True  # subtract the mean first, as the reference (AudioLDM's wave reader) does

    def __post_init__(self) -> None:
        if self.peak_dbfs > 0:
            raise ValueError(f"peak_dbfs must be <= 0 dBFS (the PCM16 ceiling), got {self.peak_dbfs}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class LoudnessInfo:
    measured_lufs: Lufs  # before normalisation; -inf for digital silence
    gain_db: Decibels  # applied gain (0 when silent)
    peak_dbfs_after: Decibels  # sample peak of the returned wave; -inf when all zero
    silent: bool
    peak_limited: bool  # the gain was lowered so the peak sits at peak_dbfs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@functools.lru_cache(maxsize=8)
def _meter(sample_rate: int):
    import pyloudnorm

    return pyloudnorm.Meter(sample_rate)  # BS.1770: K-weighting, 400 ms blocks, 75 % overlap, gating


def measure_loudness(wave: np.ndarray, sample_rate: int) -> Lufs:
    """Integrated loudness (ITU-R BS.1770, pyloudnorm) in LUFS; -inf for silence, never raises on valid samples.

    BS.1770 needs at least one 400 ms gating block. A shorter clip is measured on whole copies of itself laid
    end to end until it exceeds 0.4 s: the mean square is unchanged by the tiling, so a steady sound measures
    what a longer take of it would.
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1:
        raise ValueError(f"measure_loudness expects a mono wave [N], got shape {wave.shape}")
    if wave.size == 0 or not np.any(wave):
        return -math.inf
    min_samples = int(math.ceil(LOUDNESS_MIN_SECONDS * sample_rate)) + 1  # pyloudnorm wants strictly more than a block
    if wave.size < min_samples:
        wave = np.tile(wave, -(-min_samples // wave.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        lufs = float(_meter(sample_rate).integrated_loudness(wave))
    return lufs if math.isfinite(lufs) else -math.inf  # every block under the absolute gate: silence


def peak_dbfs(wave: np.ndarray) -> Decibels:
    peak = float(np.max(np.abs(wave))) if np.size(wave) else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def remove_dc(wave: np.ndarray) -> np.ndarray:
    """`[N]` minus its mean (computed in float64), as float32."""
    wave64 = np.asarray(wave, dtype=np.float64)
    return (wave64 - wave64.mean()).astype(np.float32)


def normalize_loudness(
    wave: np.ndarray, sample_rate: int, cfg: LoudnessConfig = LoudnessConfig()
) -> tuple[np.ndarray, LoudnessInfo]:
    """Gain `wave` to `cfg.target_lufs`, lowering the gain if needed so the sample peak stays at `cfg.peak_dbfs`.

    With `cfg.remove_dc` the mean (a DC offset, which is no sound but takes headroom from the peak limit) is
    subtracted first. Silent input (below `cfg.silence_lufs`) comes back without further change with `silent=True`:
    no gain is invented for it. Returns the float32 wave `[N]` and what was done.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if cfg.remove_dc and wave.size:
        wave = remove_dc(wave)
    measured = measure_loudness(wave, sample_rate)
    peak_before = peak_dbfs(wave)
    if measured < cfg.silence_lufs:
        info = LoudnessInfo(
            measured_lufs=measured, gain_db=0.0, peak_dbfs_after=peak_before, silent=True, peak_limited=False
        )
        return wave.copy(), info
    gain_db = cfg.target_lufs - measured
    peak_limited = peak_before + gain_db > cfg.peak_dbfs
    if peak_limited:
        gain_db = cfg.peak_dbfs - peak_before
    out = (wave.astype(np.float64) * 10.0 ** (gain_db / 20.0)).astype(np.float32)
    info = LoudnessInfo(
        measured_lufs=measured,
        gain_db=gain_db,
        peak_dbfs_after=peak_dbfs(out),
        silent=False,
        peak_limited=bool(peak_limited),
    )
    return out, info


# ----------------------------------------------------------------------------------------------------------------------
# PCM16 and FLAC


def _to_int16(wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float64)
    return np.clip(np.rint(wave * PCM16_SCALE), -32768, 32767).astype(np.int16)


def quantize_pcm16(wave: np.ndarray) -> np.ndarray:
    """Round to the int16 grid (k / 32768, clipped to [-1, 32767/32768]): what the FLAC stores. float32 `[N]`."""
    return (_to_int16(wave).astype(np.float32) / np.float32(PCM16_SCALE)).astype(np.float32)


def encode_flac(wave: np.ndarray, sample_rate: int) -> bytes:
    """float `[N]` -> FLAC bytes (PCM_16, mono). Same input, same bytes (fixed compression level, no timestamps).

    Samples are rounded to the int16 grid as `quantize_pcm16` does, and written as integers, so libsndfile's own
    float<->int scaling never enters.
    """
    import soundfile

    pcm = _to_int16(wave)
    if pcm.ndim != 1:
        raise ValueError(f"encode_flac expects a mono wave [N], got shape {pcm.shape}")
    buf = io.BytesIO()
    soundfile.write(
        buf, pcm, sample_rate, format="FLAC", subtype="PCM_16", compression_level=FLAC_COMPRESSION_LEVEL
    )
    return buf.getvalue()


def decode_flac(data: bytes) -> tuple[np.ndarray, int]:
    """FLAC bytes -> (float32 wave, sample_rate). Mono gives `[N]`, more channels `[N, C]`. Values are int16 / 32768."""
    import soundfile

    pcm, sample_rate = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=False)
    return (pcm.astype(np.float32) / np.float32(PCM16_SCALE)).astype(np.float32), int(sample_rate)


# ----------------------------------------------------------------------------------------------------------------------
# The stage


class AudioFeatureStage(Stage):
    """Loudness-normalised PCM16 audio, its FLAC bytes and its log-mel for one clip.

    Input:  row["audio"] float32 `[N]` mono at `mel.sample_rate`; row["task"].
    Output: row["audio"] float32 `[N]` (normalised, on the int16 grid), row["flac"] bytes, row["mel"] float16
            `[floor(N / hop), n_mels]` (mel of the stored audio), row["loudness_lufs"] (measured before; -inf for
            digital silence), row["gain_db"], row["peak_limited"], row["silent"].
    Rejects: bad_samples (NaN/Inf), too_short (under one mel hop), silent_audio (speech task below silence_lufs).
    A silent sound clip is kept unchanged and flagged silent=True: silence is a sound too.
    """

    name: ClassVar[str] = "audio"

    def __init__(self, *, mel: MelConfig = MelConfig(), loudness: LoudnessConfig = LoudnessConfig()):
        super().__init__()
        self.mel_config = mel
        self.loudness_config = loudness
        self._log_mel: LogMel | None = None

    def setup(self) -> None:
        self._log_mel = LogMel(self.mel_config)

    def process(self, row: Row) -> None:
        if self._log_mel is None:
            self.setup()
        sample_rate = self.mel_config.sample_rate
        if row.get("sample_rate", sample_rate) != sample_rate:
            raise ValueError(f"audio at {row['sample_rate']} Hz reached the audio stage; it expects {sample_rate} Hz")
        wave = np.asarray(row["audio"], dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"expected mono audio [N], got shape {wave.shape}")
        finite = np.isfinite(wave)
        if not finite.all():
            raise Reject("bad_samples", f"{int((~finite).sum())} of {wave.size} samples are NaN or Inf")
        if wave.size < self.mel_config.hop_length:
            raise Reject(
                "too_short",
                f"{wave.size} samples ({wave.size / sample_rate:.4f} s) is less than one mel frame "
                f"({self.mel_config.hop_length} samples)",
            )

        normalised, info = normalize_loudness(wave, sample_rate, self.loudness_config)
        if info.silent and row["task"] in SPEECH_TASKS:
            raise Reject(
                "silent_audio",
                f"integrated loudness {info.measured_lufs:.1f} LUFS is below {self.loudness_config.silence_lufs:.1f} "
                f"LUFS for a {row['task']} clip",
            )
        stored = quantize_pcm16(normalised)  # [N], what the FLAC holds
        row["audio"] = stored
        row["flac"] = encode_flac(stored, sample_rate)
        row["mel"] = self._log_mel(stored).astype(np.float16)  # [T, n_mels]
        row["loudness_lufs"] = info.measured_lufs
        row["gain_db"] = info.gain_db
        row["peak_limited"] = info.peak_limited
        row["silent"] = info.silent
