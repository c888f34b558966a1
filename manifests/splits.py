"""Canonical splits: every manifest's `split` is one of train, valid, test; the corpus's own name for the part a
clip comes from ("test-clean", "pretrain", "dev-other") goes in `subset`. The trainer holds out valid and test by
this column alone, so a corpus whose names differ from "test" can never leak its test data into training.

Each reader maps its corpus's names itself (LibriTTS, LRS2, VGGSound); `canonical_split` is the general rule used
for a name given on the command line and for manifests written before the column was canonical.
"""

from __future__ import annotations

import re
from typing import Optional

SPLITS = ("train", "valid", "test")
HELD_OUT_SPLITS = frozenset({"valid", "test"})

_RULES = (
    (re.compile(r"^(train|training|pretrain)([-_].*)?$"), "train"),
    (re.compile(r"^(valid|val|validation|dev|development)([-_].*)?$"), "valid"),
    (re.compile(r"^(test|testing|eval|evaluation)([-_].*)?$"), "test"),
)


def canonical_split(name: Optional[str]) -> Optional[str]:
    """A split or subset name -> train, valid or test ('dev-clean' -> valid, 'pretrain' -> train, 'val' -> valid);
    None for None and for a name no rule knows."""
    if name is None:
        return None
    lowered = name.strip().lower()
    for pattern, split in _RULES:
        if pattern.match(lowered):
            return split
    return None
