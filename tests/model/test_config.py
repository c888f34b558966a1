"""The DiT configuration: presets, their sizes, round trips and validation."""

from __future__ import annotations

import pytest
import torch

from model.config import PRESETS, DiTConfig, preset
from model.dit import VSSFlowDiT, count_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Parameter counts per preset and audio width (mel 256 = 4 frames x 64 bands, latent 128), as BENCHMARKS.md states
# them (tiny 0.28M, small 17.9M, base 461.4M; the paper: about 460M). A change of architecture updates both.
PARAMETERS = {("base", 256): 461_359_360, ("base", 128): 460_966_016, ("small", 256): 17_947_776,
              ("small", 128): 17_849_344, ("tiny", 256): 275_648, ("tiny", 128): 259_136,
              ("reference", 256): 461_359_360, ("reference", 128): 460_966_016}


def test_preset_parameter_counts_and_base_near_460m():
    counts = {}
    for name in PRESETS:
        for audio_dim in (256, 128):
            with torch.device("meta"):
                counts[name, audio_dim] = count_parameters(VSSFlowDiT(preset(name, audio_dim=audio_dim)))
    assert counts == PARAMETERS
    assert abs(counts["base", 256] - 460e6) / 460e6 < 0.01


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
