"""The formats `pipeline manifest build` knows, each a Reader declared by its own module, and `build_manifest`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from manifests.readers.common import apply_defaults
from manifests.readers.grid import READER as GRID
from manifests.readers.lhotse import READER as LHOTSE
from manifests.readers.libritts import READER as LIBRITTS
from manifests.readers.ljspeech import READER as LJSPEECH
from manifests.readers.lrs2 import READER as LRS2
from manifests.readers.reader import Corpus, Reader
from manifests.readers.reference import READER as REFERENCE
from manifests.readers.table import READER as TABLE
from manifests.readers.vggsound import READER as VGGSOUND
from manifests.schema import Clip, clips_to_table
from manifests.validate import ManifestError, validate_table

# In the order `pipeline manifest build --help` lists them.
FORMATS: dict[str, Reader] = {reader.name: reader
                              for reader in (LJSPEECH, LIBRITTS, VGGSOUND, LRS2, GRID, LHOTSE, TABLE, REFERENCE)}
READERS: dict[str, Callable[..., list[Clip] | pa.Table]] = {name: reader.read for name, reader in FORMATS.items()}


def corpus_of(dataset: str | None) -> Corpus | None:
    """The public corpus a manifest's `dataset` value names (each reader's default dataset is its format's name),
    or None for a name no reader declares (the table, reference and lhotse layouts carry any corpus)."""
    reader = FORMATS.get(dataset or "")
    return reader.corpus if reader is not None else None


def build_manifest(format: str, source: str | Path, *, defaults: dict[str, Any] | None = None,
                   **kwargs: Any) -> pa.Table:
    """Read `source` with the reader named `format` (see FORMATS), fill `defaults`, validate, return the table.

    kwargs go to the reader (e.g. video_dir for vggsound, media_root for lrs2, task for reference). Raises
    ManifestError for an unreadable source, an empty result, or an invalid manifest.
    """
    if format not in FORMATS:
        raise ManifestError(f"unknown manifest format {format!r}; known: {', '.join(FORMATS)}")
    reader = FORMATS[format]
    if reader.takes_defaults:
        table = reader.read(source, defaults=defaults, **kwargs)
    else:
        result = reader.read(source, **kwargs)
        table = apply_defaults(clips_to_table(result) if isinstance(result, list) else result, defaults)
    if table.num_rows == 0:
        raise ManifestError(f"{source} gave no rows for format {format!r}")
    validate_table(table)
    return table
