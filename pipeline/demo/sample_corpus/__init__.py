"""A small, real, learnable corpus of media files for tests, demos and benchmarks.

`make_sample_corpus(out_dir)` writes real media under `out_dir/media/`, a manifest `out_dir/manifest.parquet`
(paths relative to `out_dir`, the data root) and `out_dir/expected.json`, which says what the pipeline must do
with every row:

    {"v2s_redcircle_mp4_000": {"outcome": "ok", "task": "v2s", "cut": false, "sound_class": "redcircle", ...},
     "bad_truncated":         {"outcome": "reject", "stage": "decode", "reason": "unreadable_media"}, ...}

Good rows carry notes (`cut` for clips over 10 s, `vfr`, `rotation_deg`, `duration_s`, `sample_rate`,
`channels`, `container`, and the content truth: `sound_class`, `tone_hz`, `onsets_s`).

The content is learnable, so a model trained on it has something to find:
  - v2s: a shape whose colour and form decide its sound (`SOUND_CLASSES`) bounces and flashes exactly when
    a percussive burst of that sound starts.
  - visual_tts: a drawn face whose mouth opening follows the amplitude envelope of espeak-ng speech.
  - tts: espeak-ng speech only, several voices and speeds.
  - joint: a talking face beside a bouncing shape; speech mixed over the shape's sound.

Frames are drawn with numpy and piped to ffmpeg as rawvideo; speech comes from the espeak-ng binary.

Modules, one job each: plan (the specs: what to make), draw (the bouncing shape), sound (its sound, room tone),
speech (espeak-ng speech tracks), face (the talking face and its mouth), encode (ffmpeg and espeak-ng, files),
render (the good clips, one renderer per task), hostile (the rejected inputs).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from manifests.atomic import atomic_write_text
from manifests.schema import Clip, write_manifest
from pipeline.demo.sample_corpus.draw import HEIGHT, WIDTH
from pipeline.demo.sample_corpus.encode import find_tools
from pipeline.demo.sample_corpus.hostile import render_hostile
from pipeline.demo.sample_corpus.plan import SOUND_CLASSES, MediaFormat, SampleSpec, SoundClass, plan_sample_corpus
from pipeline.demo.sample_corpus.render import RENDERERS

__all__ = [
    "HEIGHT", "SOUND_CLASSES", "WIDTH", "MediaFormat", "SampleSpec", "SoundClass", "find_tools",
    "make_sample_corpus", "plan_sample_corpus",
]


def make_sample_corpus(out_dir: Path, *, seed: int = 0, scale: int = 1, include_bad: bool = True,
                       progress: Optional[Callable[[str], None]] = None) -> Path:
    """Write media, `manifest.parquet` and `expected.json` under out_dir (the data root); return the manifest path.

    scale multiplies the good clips (about 25 per unit: every kind again with fresh content). The same seed gives
    the same manifest rows with the same tools; media bytes may differ between ffmpeg versions, and between runs
    for VP8 files (libvpx's realtime mode picks its speed from the time each frame takes) and the NaN wav (its
    PEAK chunk holds a timestamp).
    """
    out_dir = Path(out_dir)
    specs = plan_sample_corpus(seed=seed, scale=scale, include_bad=include_bad)
    tools = find_tools()
    for sub in ("v2s", "visual_tts", "tts", "joint", "bad"):
        (out_dir / "media" / sub).mkdir(parents=True, exist_ok=True)
    clips: list[Clip] = []
    expected: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sample_corpus_") as tmp_name:
        tmp = Path(tmp_name)
        for spec in specs:
            render = render_hostile if spec.bad else RENDERERS[spec.task]
            clip, notes = render(spec, tools, out_dir, tmp)
            clips.append(clip)
            expected[clip.clip_id] = notes
            if progress is not None:
                progress(clip.clip_id)
    atomic_write_text(out_dir / "expected.json", json.dumps(expected, indent=1, sort_keys=True, ensure_ascii=False))
    return write_manifest(clips, out_dir / "manifest.parquet")
