"""Fixtures of the model tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tiny_vocoder(tmp_path_factory) -> Path:
    """A tiny randomly initialised HiFi-GAN for the default mel (it makes noise: for interfaces only)."""
    from model.vocoder import make_tiny_vocoder

    return make_tiny_vocoder(tmp_path_factory.mktemp("models") / "tiny-hifigan")
