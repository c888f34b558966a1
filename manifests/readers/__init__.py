"""Readers: common corpus layouts -> manifest rows, one module per corpus, listed in `registry.FORMATS`.

Readers only list folders and read text files (lists, transcripts, alignments); they never open media, so they
do not check that media files exist or decode (`pipeline manifest validate --data-root` checks existence, the
extract stages reject what does not decode).

Media paths are written relative to a data root (`data_root`, by default the corpus folder itself) so that the
manifest moves with the data; pass the folder you will give `pipeline run extract --data-root` when the corpus lies
somewhere below it. clip_ids are derived from the corpus's own ids with every character outside [A-Za-z0-9_-]
replaced by '_' (`sanitize_clip_id`); two ids that collide after that are a ManifestError, never a silent merge.
A row whose transcript file is missing is kept with a null transcript (the extract stage rejects it with a reason);
one whose file cannot be read keeps the reason in transcript_problem. Every reader writes a canonical split (train,
valid, test) and the corpus's own name in subset; readers with word timings keep them (words) and cut clips longer
than max_seconds at word boundaries (`words.py`).
"""

from manifests.readers.common import Transcript, TranscriptFn, apply_defaults, sanitize_clip_id
from manifests.readers.grid import grid_align_transcript, read_grid
from manifests.readers.libritts import read_libritts
from manifests.readers.ljspeech import read_ljspeech
from manifests.readers.lrs2 import lrs2_transcript, read_lrs2_list
from manifests.readers.reader import Reader, ReaderOption
from manifests.readers.reference import read_reference_list
from manifests.readers.registry import FORMATS, READERS, build_manifest
from manifests.readers.table import read_table
from manifests.readers.vggsound import read_vggsound

__all__ = [
    "FORMATS", "READERS", "Reader", "ReaderOption", "Transcript", "TranscriptFn", "apply_defaults", "build_manifest",
    "grid_align_transcript", "lrs2_transcript", "read_grid", "read_libritts", "read_ljspeech", "read_lrs2_list",
    "read_reference_list", "read_table", "read_vggsound", "sanitize_clip_id",
]
