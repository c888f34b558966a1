"""One tiny corpus per layout, for the reader tests (tests/manifests/readers) and the dispatch test."""

from __future__ import annotations

import pytest

from tests.manifests.helpers import make_grid, make_libritts, make_ljspeech, make_lrs2


@pytest.fixture
def ljspeech(tmp_path):
    return make_ljspeech(tmp_path)


@pytest.fixture
def libritts(tmp_path):
    return make_libritts(tmp_path)


@pytest.fixture
def lrs2(tmp_path):
    return make_lrs2(tmp_path)


@pytest.fixture
def grid(tmp_path):
    return make_grid(tmp_path)
