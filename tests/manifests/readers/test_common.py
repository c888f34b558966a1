"""What every reader shares: corpus ids as clip_ids."""

from __future__ import annotations

import pytest

from manifests.readers import sanitize_clip_id
from manifests.validate import ManifestError


def test_sanitize_clip_id():
    assert sanitize_clip_id("LJ001.0001") == "LJ001_0001"
    assert sanitize_clip_id("5535415699068794046/00001") == "5535415699068794046_00001"
    with pytest.raises(ManifestError):
        sanitize_clip_id("")
