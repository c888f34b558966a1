"""`pipeline mix rebuild`: re-render one stored mixture from its recipe and sources, and compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from manifests.errors import PipelineError
from pipeline.jobs.synth_mix import SynthMixConfig, mix_sample, mix_stages, source_checks
from stages.base import Row
from stages.format.contract import read_dataset_json
from stages.format.layout import OutputDir
from stages.format.shard_io import ShardReader, decode_sample
from stages.mix import MixRecipe

LATENT_TOLERANCE = 2e-2  # float16 storage of a VAE encoder output re-run in another batch


def rebuild_mixture(out_dir: Path, key: str, *, vae_dir: Optional[str] = None) -> dict[str, Any]:
    """Re-render one stored mixture from its recipe and sources and compare it with what the shard holds.

    Waveform mixing, FLAC, mel (one process, same code), video and phonemes are deterministic and must be
    identical; VAE latents go through a neural network and are compared within LATENT_TOLERANCE.
    """
    out_dir = Path(out_dir)
    contract, _ = read_dataset_json(out_dir)
    stored = decode_sample(ShardReader().read(OutputDir(out_dir).find(key), key))
    recipe = MixRecipe.from_dict(stored["meta"]["recipe"])
    row: Row = recipe.to_dict()
    checks = source_checks([recipe.speech_shard, recipe.sound_shard])
    for stage in mix_stages(contract, SynthMixConfig(vae_dir=vae_dir), checks):
        row = stage([row])[0]
    if row["reject_reason"]:
        raise PipelineError(f"rebuild of {key} failed: {row['reject_stage']}/{row['reject_reason']}: {row['reject_detail']}")
    meta, arrays, flac = mix_sample(row)
    checks: dict[str, str] = {"json": "identical" if meta == stored["meta"] else "DIFFERENT",
                              "audio.flac": "identical" if flac == stored["flac"] else "DIFFERENT"}
    for name, array in arrays.items():
        ref = stored["arrays"][name]
        if array is None and ref is None:
            continue
        if array is None or ref is None or array.shape != ref.shape:
            checks[f"{name}.npy"] = "DIFFERENT (shape)"
        elif np.array_equal(array, ref):
            checks[f"{name}.npy"] = "identical"
        else:
            diff = float(np.abs(array.astype(np.float32) - ref.astype(np.float32)).max())
            ok = name == "latent" and diff <= LATENT_TOLERANCE
            checks[f"{name}.npy"] = f"{'within tolerance' if ok else 'DIFFERENT'}: max |diff| {diff:.2e}"
    return {"key": key, "checks": checks, "ok": not any("DIFFERENT" in v for v in checks.values())}

