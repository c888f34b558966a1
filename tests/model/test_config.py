"""The DiT configuration: presets, their sizes, round trips and validation."""

from __future__ import annotations

import pytest
import torch

from model.config import PRESETS, DiTConfig, preset
from model.dit import VSSFlowDiT, count_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_preset_parameter_counts_and_base_near_460m():
    for name in PRESETS:
        for audio_dim in (256, 128):
            with torch.device("meta"):
                n = count_parameters(VSSFlowDiT(preset(name, audio_dim=audio_dim)))
            print(f"{name:5s} audio_dim={audio_dim}: {n / 1e6:.1f}M parameters")
            if name == "base":
                assert abs(n - 460e6) / 460e6 < 0.05, n
    with torch.device("meta"):
        assert count_parameters(VSSFlowDiT(preset("small"))) < count_parameters(VSSFlowDiT(preset("base")))


def test_config_roundtrip_overrides_and_validation():
    cfg = preset("small", audio_dim=128, ref_token=True)
    assert cfg.audio_dim == 128 and cfg.width == 384 and PRESETS["small"].audio_dim == 256
    assert DiTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown DiTConfig fields"):
        DiTConfig.from_dict({**cfg.to_dict(), "colour": "red"})
    with pytest.raises(KeyError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ValueError, match="divisible"):
        DiTConfig(width=65, heads=4, depth=1)
    with pytest.raises(TypeError):
        DiTConfig(64, 4, 2)  # keyword-only
