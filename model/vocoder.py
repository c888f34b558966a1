"""Log-mel -> 16 kHz waveform: a HiFi-GAN vocoder from a local directory, or Griffin-Lim when none is given.

Both take the log-mel exactly as `stages.audio.LogMel` makes it ([T, n_mels], natural log of the magnitude mel,
frame t centred on sample t * hop + hop / 2) and return float32 [T * hop] at the contract's sample rate.

- `HifiGanVocoder`: transformers `SpeechT5HifiGan` (the class of AudioLDM's 16 kHz vocoder) from a local directory.
  Its config must fit the features: model_in_dim = n_mels, sampling_rate = sample_rate, and the product of its
  upsample rates = hop_length (one mel frame -> hop samples); anything else is refused with the numbers.
- `GriffinLimVocoder`: torchaudio's InverseMelScale (least squares back to the linear STFT magnitude, with the
  MelConfig's filters: Slaney scale and norm) then GriffinLim (magnitude, Hann window, n_fft / hop as extracted).
  torchaudio's STFT frames are centred on t * hop, ours on t * hop + hop / 2, so the result is delayed by hop / 2
  samples to line up with the mel.

`make_tiny_vocoder` saves a tiny RANDOMLY initialised HiFi-GAN of the right interface, for tests and demos only
(its config says so: `vssflow_random_init`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from manifests.errors import PipelineError
from stages.audio import MelConfig
from stages.model_dir import check_model_dir, read_model_config

RANDOM_INIT_KEY = "vssflow_random_init"
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_HINT = (" A vocoder is a local SpeechT5HifiGan directory (e.g. the vocoder/ folder of an AudioLDM checkpoint); "
         "leave --vocoder out to use Griffin-Lim.")


class VocoderError(PipelineError, ValueError):
    """A vocoder that does not fit the features (a missing or malformed directory is a `ModelDirError`)."""


def log_mel_bounds(mel: MelConfig) -> tuple[float, float]:
    """The range of a log-mel of any wave in [-1, 1]: log(log_floor) below; above, the log of the largest band's
    filter weight sum times the largest STFT magnitude, sum(Hann window) = win_length / 2."""
    import torchaudio

    filters = torchaudio.functional.melscale_fbanks(mel.n_fft // 2 + 1, mel.f_min, mel.f_max, mel.n_mels,
                                                    mel.sample_rate, mel.norm, mel.mel_scale)   # [F, n_mels]
    return math.log(mel.log_floor), math.log(mel.win_length / 2 * float(filters.sum(0).max()))


class GriffinLimVocoder:
    name = "griffin-lim"

    def __init__(self, mel: MelConfig, *, n_iter: int = 64, seed: int = 0):
        import torchaudio

        self.mel, self.seed = mel, seed
        self.inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=mel.n_fft // 2 + 1, n_mels=mel.n_mels, sample_rate=mel.sample_rate, f_min=mel.f_min,
            f_max=mel.f_max, norm=mel.norm, mel_scale=mel.mel_scale)
        self.n_iter = n_iter

    def info(self) -> dict:
        return {"name": self.name, "n_iter": self.n_iter}

    def __call__(self, log_mel: np.ndarray | torch.Tensor) -> np.ndarray:
        """[T, n_mels] natural-log mel -> float32 [T * hop]."""
        import torchaudio

        cfg = self.mel
        log_mel = torch.as_tensor(log_mel, dtype=torch.float32)
        n_frames = log_mel.shape[0]
        if n_frames == 0:
            return np.zeros(0, dtype=np.float32)
        griffin_lim = torchaudio.transforms.GriffinLim(   # centred frames: T frames <-> (T - 1) * hop samples
            n_fft=cfg.n_fft, n_iter=self.n_iter, win_length=cfg.win_length, hop_length=cfg.hop_length, power=1.0,
            length=(n_frames - 1) * cfg.hop_length)
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)                                            # GriffinLim's random phase
            magnitude = self.inverse_mel(log_mel.exp().T)                           # [n_fft / 2 + 1, T]
            wave = griffin_lim(magnitude)                                           # [(T - 1) * hop]
        shift = cfg.hop_length // 2                                                 # align frame centres
        wave = torch.nn.functional.pad(wave, (shift, n_frames * cfg.hop_length - shift - wave.shape[0]))
        return wave.numpy().astype(np.float32)                                      # [T * hop]


def vocoder_problems(config: dict, mel: MelConfig) -> list[str]:
    """Why a SpeechT5HifiGan config.json does not fit features made with `mel` (empty when it fits)."""
    kind = config.get("model_type")
    problems = [] if kind in (None, "hifigan", "speecht5_hifigan") else [f"model_type {kind!r} (not a HiFi-GAN)"]
    upsample = math.prod(config.get("upsample_rates", ()))
    expected = {"model_in_dim": mel.n_mels, "sampling_rate": mel.sample_rate}
    problems += [f"{k} {config.get(k)} (features need {v})" for k, v in expected.items() if config.get(k) != v]
    if upsample != mel.hop_length:
        problems.append(f"upsample_rates {config.get('upsample_rates')} make {upsample} samples per frame "
                        f"(features need hop_length {mel.hop_length})")
    return problems


class HifiGanVocoder:
    name = "hifigan"

    def __init__(self, model_dir: str | Path, mel: MelConfig, *, device: str | torch.device = "cpu"):
        from transformers import SpeechT5HifiGan

        self.model_dir, self.mel = check_model_dir(model_dir, "vocoder", _WEIGHTS, _HINT), mel
        config = read_model_config(self.model_dir, "vocoder")
        problems = vocoder_problems(config, mel)
        if problems:
            raise VocoderError(f"vocoder in {self.model_dir} does not fit the features: {'; '.join(problems)}")
        self.random_init = bool(config.get(RANDOM_INIT_KEY, False))
        self.device = torch.device(device)
        self.model = SpeechT5HifiGan.from_pretrained(str(self.model_dir), local_files_only=True,
                                                     use_safetensors=True).to(self.device).eval()

    def info(self) -> dict:
        return {"name": self.name, "model_dir": str(self.model_dir), "random_init": self.random_init}

    def __call__(self, log_mel: np.ndarray | torch.Tensor) -> np.ndarray:
        """[T, n_mels] natural-log mel -> float32 [T * hop]."""
        log_mel = torch.as_tensor(log_mel, dtype=torch.float32, device=self.device)
        length = log_mel.shape[0] * self.mel.hop_length
        with torch.inference_mode():
            wave = self.model(log_mel).float()                                      # [~T * hop]
        # transposed convolutions whose kernel - stride is odd add a sample or so per layer: trim (as diffusers'
        # AudioLDM pipeline does) or pad to exactly T * hop
        wave = torch.nn.functional.pad(wave[:length], (0, max(0, length - wave.shape[0])))
        return wave.cpu().numpy().astype(np.float32)                               # [T * hop]


def load_vocoder(vocoder_dir: Optional[str | Path], mel: MelConfig, *, device: str | torch.device = "cpu",
                 seed: int = 0):
    """HiFi-GAN from `vocoder_dir`, or Griffin-Lim when it is None."""
    if vocoder_dir is None:
        return GriffinLimVocoder(mel, seed=seed)
    return HifiGanVocoder(vocoder_dir, mel, device=device)


def make_tiny_vocoder(out_dir: str | Path, *, mel: MelConfig = MelConfig(), seed: int = 0) -> Path:
    """A tiny randomly initialised SpeechT5HifiGan for `mel` (tests and demos ONLY: it makes noise, not speech)."""
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    rates = _factor(mel.hop_length)
    config = SpeechT5HifiGanConfig(model_in_dim=mel.n_mels, sampling_rate=mel.sample_rate,
                                   upsample_initial_channel=2 ** len(rates) * 2, upsample_rates=rates,
                                   upsample_kernel_sizes=[2 * r for r in rates], resblock_kernel_sizes=[3],
                                   resblock_dilation_sizes=[[1]], normalize_before=False)
    setattr(config, RANDOM_INIT_KEY, True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SpeechT5HifiGan(config)
    out = Path(out_dir)
    model.save_pretrained(out)
    return out


def _factor(n: int) -> list[int]:
    """n as a product of small factors, largest first (160 -> [5, 4, 4, 2])."""
    factors, rest = [], n
    for p in (5, 4, 3, 2):
        while rest % p == 0:
            factors.append(p)
            rest //= p
    return factors + ([rest] if rest != 1 else [])
