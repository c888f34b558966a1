"""The speaker reference `K.speaker.npy`: float32 [dim] utterance embedding of a speech row's speech span.

Default encoder: Resemblyzer's `VoiceEncoder` (GE2E, 256-d), whose trained weights ship inside the `resemblyzer`
wheel: nothing is downloaded. The span is prepared the package's way (`preprocess_wav`: volume to -30 dBFS, long
silences cut by webrtcvad) and embedded the way `VoiceEncoder.embed_utterance` does (1.6 s partials at 1.3 per
second, mean, L2 norm); only the 40-band mel front end is computed here with torch instead of librosa (the same
filters and STFT; `resemblyzer_mel`), which spares every worker librosa's numba start-up.

Any other encoder: `speaker.model_dir`, a local TorchScript directory (`stages.encoder_dir`, kind "speaker":
forward(wave [B, N] at 16 kHz) -> [B, dim]) that gets the span as it is stored.

A span in which no voice remains (digital silence, or nothing the VAD calls speech) is rejected `no_voice`: an
embedding of silence would be a confident vector that names nobody.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np

from manifests.tasks import SPEECH_TASKS
from stages.base import Reject, Row, Stage

ENCODERS = ("resemblyzer", "torchscript")
MIN_VOICED_S = 0.25     # voice left in the span after the VAD, below which the row is no_voice
SILENCE_DBFS = -60.0    # a span whose peak is below this holds no voice at all


@dataclass(frozen=True, kw_only=True)
class SpeakerConfig:
    enabled: bool = True
    model_dir: Optional[str] = None   # a local TorchScript speaker encoder; None: Resemblyzer's packaged weights
    device: str = "auto"

    @property
    def encoder(self) -> str:
        return "torchscript" if self.model_dir else "resemblyzer"


def speaker_info(config: SpeakerConfig) -> dict:
    """What the contract records about the speaker reference (checks a model directory before any work)."""
    if config.model_dir:
        from stages.encoder_dir import describe_encoder_dir

        encoder = describe_encoder_dir(config.model_dir, "speaker")
    else:
        import importlib.metadata

        encoder = {"name": "resemblyzer", "version": importlib.metadata.version("resemblyzer"),
                   "weights": "resemblyzer/pretrained.pt", "random_init": False}
    return {"dim": int(encoder.get("dim", 256)), "dtype": "float32", "tasks": sorted(SPEECH_TASKS),
            "span": "speech", "encoder": encoder}


def resemblyzer_mel(wav: np.ndarray) -> np.ndarray:
    """float32 [T, 40] power mel as `resemblyzer.audio.wav_to_mel_spectrogram` (librosa: 25 ms Hann window, 10 ms
    hop, centred with zero padding, Slaney mel filters)."""
    import torch
    import torchaudio.functional as AF

    x = torch.from_numpy(np.ascontiguousarray(wav, np.float32))
    spec = torch.stft(x, n_fft=400, hop_length=160, win_length=400, window=torch.hann_window(400), center=True,
                      pad_mode="constant", return_complex=True).abs().pow(2)            # [201, T]
    fb = AF.melscale_fbanks(201, 0.0, 8000.0, 40, 16000, norm="slaney", mel_scale="slaney")  # [201, 40]
    return (spec.T @ fb).numpy().astype(np.float32)                                   # [T, 40]


def cut_span(wave: np.ndarray, rate: int, start_s: float, end_s: float) -> np.ndarray:
    """wave `[N]` from start_s to end_s (clip time, seconds; the start clamped at 0, an end before it gives an
    empty span): the one cut of a speech span, for extract's reference and evaluate's two sides."""
    a = int(max(0.0, start_s) * rate)
    return wave[a:max(a, int(end_s * rate))]


class SpeakerStage(Stage):
    """row["flac"] (the stored audio) and the speech span -> row["speaker_ref"] float32 [dim], speech tasks only
    (stored as K.speaker.npy; row["speaker"] is the manifest's speaker id)."""

    name = "speaker"

    def __init__(self, *, config: SpeakerConfig = SpeakerConfig()):
        super().__init__()
        self.config = config

    def setup(self) -> None:
        from stages.device import pick_device

        self.device = pick_device(self.config.device)
        if self.config.model_dir:
            from stages.encoder_dir import load_encoder

            self.module, cfg = load_encoder(self.config.model_dir, "speaker", self.device)
            self.dim = int(cfg["dim"])
            return
        with warnings.catch_warnings():   # webrtcvad imports pkg_resources, which warns that it is deprecated
            warnings.simplefilter("ignore", UserWarning)
            from resemblyzer import VoiceEncoder

        self.module = VoiceEncoder(self.device, verbose=False).eval()
        self.dim = 256

    def span_wave(self, row: Row) -> np.ndarray:
        """float32 [N]: the stored audio over the row's speech span."""
        from stages.audio import decode_flac

        wave, rate = decode_flac(row["flac"])
        start = float(row.get("start_s") or 0.0)
        a = float(row.get("speech_start_s") if row.get("speech_start_s") is not None else start) - start
        b = float(row.get("speech_end_s") if row.get("speech_end_s") is not None else start + len(wave) / rate)
        return cut_span(wave, rate, a, b - start)

    def embed(self, wave: np.ndarray) -> np.ndarray:
        """float32 [dim] for a 16 kHz span; Reject no_voice when none is in it."""
        import torch

        peak = float(np.abs(wave).max(initial=0.0))
        if peak <= 10 ** (SILENCE_DBFS / 20):
            raise Reject("no_voice", f"the speech span ({len(wave) / 16000:.2f} s) is silent (peak "
                                     f"{20 * np.log10(max(peak, 1e-12)):.0f} dBFS)")
        if self.config.model_dir:
            with torch.inference_mode():
                out = self.module(torch.from_numpy(wave[None].astype(np.float32)).to(self.device))
            return self._checked(out[0].float().cpu().numpy())
        from resemblyzer import preprocess_wav

        voiced = preprocess_wav(wave.astype(np.float32), source_sr=16000)
        if len(voiced) < MIN_VOICED_S * 16000:
            raise Reject("no_voice", f"the voice-activity detector left {len(voiced) / 16000:.2f} s of voice in "
                                     f"the {len(wave) / 16000:.2f} s speech span (< {MIN_VOICED_S} s)")
        return self._checked(self._resemblyzer(voiced))

    def _resemblyzer(self, wav: np.ndarray, rate: float = 1.3, min_coverage: float = 0.75) -> np.ndarray:
        """VoiceEncoder.embed_utterance with the torch mel front end."""
        import torch

        wav_slices, mel_slices = self.module.compute_partial_slices(len(wav), rate, min_coverage)
        if wav_slices[-1].stop >= len(wav):
            wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)))
        mel = resemblyzer_mel(wav)                                                     # [T, 40]
        mels = torch.from_numpy(np.stack([mel[s] for s in mel_slices])).to(self.device)  # [P, 160, 40]
        with torch.inference_mode():
            partial = self.module(mels).cpu().numpy()                                  # [P, 256]
        raw = partial.mean(axis=0)
        return raw / np.linalg.norm(raw)

    def _checked(self, vector: np.ndarray) -> np.ndarray:
        if vector.shape != (self.dim,) or not np.isfinite(vector).all():
            raise RuntimeError(f"speaker encoder returned {vector.shape} (finite: {np.isfinite(vector).all()}), "
                               f"expected [{self.dim}]")
        return vector.astype(np.float32)

    def process(self, row: Row) -> None:
        row["speaker_ref"] = None
        if row["task"] in SPEECH_TASKS:
            row["speaker_ref"] = self.embed(self.span_wave(row))
