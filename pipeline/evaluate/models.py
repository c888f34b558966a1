"""The optional models of `pipeline run evaluate`, from local directories only (or cached Hugging Face repo ids):
an ASR model for WER and an audio encoder for the Fréchet distance. `asr_problem` and `embedding_problem` say why
a `config.json` does not fit (used by `pipeline models check` too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from manifests.errors import UsageError
from stages.model_dir import check_model_dir, read_model_config

ASR_ARCHITECTURES = ("ForCTC", "ForSpeechSeq2Seq", "WhisperForConditionalGeneration")
# encoders whose last hidden state (mean over time) or audio features (CLAP) make a clip embedding
EMBEDDING_MODEL_TYPES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "clap",
                         "audio-spectrogram-transformer")
SAMPLE_RATE = 16000


def asr_problem(config: dict[str, Any]) -> Optional[str]:
    found = config.get("architectures") or []
    if any(a.endswith(ASR_ARCHITECTURES) for a in found):
        return None
    return f"architectures {found} name no speech recogniser (a ...ForCTC or speech-to-text model)"


def embedding_problem(config: dict[str, Any]) -> Optional[str]:
    if config.get("model_type") in EMBEDDING_MODEL_TYPES:
        return None
    return f"model_type {config.get('model_type')!r} is not an audio encoder this command reads " \
           f"({', '.join(EMBEDDING_MODEL_TYPES)})"


def _checked(model_dir: str | Path, what: str, problem) -> Path:
    path = check_model_dir(model_dir, what)
    why = problem(read_model_config(path, what))
    if why:
        raise UsageError(f"{what} {path}: {why}")
    return path


class Transcriber:
    """16 kHz wave -> text with a local transformers speech recogniser (CTC or sequence-to-sequence)."""

    def __init__(self, model_dir: str | Path):
        from transformers import pipeline

        self.path = _checked(model_dir, "ASR model", asr_problem)
        self._asr = pipeline("automatic-speech-recognition", model=str(self.path), device="cpu")

    def __call__(self, wave: np.ndarray) -> str:
        result = self._asr({"raw": np.asarray(wave, np.float32), "sampling_rate": SAMPLE_RATE})
        return str(result["text"]).strip()


class AudioEmbedder:
    """16 kHz wave -> one embedding `[D]`: CLAP's audio features, else the mean of the encoder's last hidden state."""

    def __init__(self, model_dir: str | Path):
        from transformers import AutoFeatureExtractor, AutoModel

        self.path = _checked(model_dir, "audio embedding model", embedding_problem)
        self._features = AutoFeatureExtractor.from_pretrained(str(self.path), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(self.path), local_files_only=True).eval()

    def __call__(self, wave: np.ndarray) -> np.ndarray:
        import torch

        inputs = self._features(np.asarray(wave, np.float32), sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.inference_mode():
            if hasattr(self._model, "get_audio_features"):
                return self._model.get_audio_features(**inputs)[0].float().numpy()              # [D]
            hidden = self._model(**inputs).last_hidden_state                                    # [1, T, D]
        return hidden[0].mean(0).float().numpy()                                                # [D]
