"""The vocoders on real mels of the extracted corpus: Griffin-Lim's timeline, HiFi-GAN's length."""

from __future__ import annotations

import numpy as np
import pytest

from model.vocoder import GriffinLimVocoder, HifiGanVocoder
from stages.audio import LogMel, MelConfig, decode_flac
from stages.format.contract import read_dataset_json
from stages.format.shard_io import iter_samples

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_griffin_lim_inverts_a_real_mel_on_its_timeline(extracted):
    out, _ = extracted
    sample = next(s for s in iter_samples(sorted((out / "shards").glob("*.tar"))) if s["meta"]["task"] == "tts")
    wave, _ = decode_flac(sample["flac"])
    mel_cfg = MelConfig()
    mel = LogMel(mel_cfg)(wave)                                                    # [T, 64]
    rebuilt = GriffinLimVocoder(mel_cfg)(mel)
    assert rebuilt.shape == (len(mel) * 160,) and rebuilt.dtype == np.float32

    def error(shift):
        return float(np.abs(LogMel(mel_cfg)(np.roll(rebuilt, shift)) - mel)[5:-5].mean())

    aligned = error(0)
    assert aligned < error(-80) and aligned < error(80)                         # frame centres line up
    assert aligned < 0.5 * float(np.abs(mel - mel.mean()).mean())


def test_hifigan_wave_covers_the_mel_exactly(tiny_vocoder, extracted):
    out, _ = extracted
    contract = read_dataset_json(out)[0]
    vocoder = HifiGanVocoder(tiny_vocoder, contract.mel_config())
    wave = vocoder(np.full((37, 64), -5.0, dtype=np.float32))
    assert wave.shape == (37 * 160,) and np.isfinite(wave).all()
