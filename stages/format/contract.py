"""The feature contract in `dataset.json`, and the check every sample of a shard must pass.

`FeatureContract` records rates, dims, dtypes, encoder and vocabulary; its `feature_hash` changes whenever a sample
produced under it would differ. `check_sample` is the one validation used by the writers (what they write), by the
trainer's loader (what it reads) and by tests. `require_same` is the one check that several folders (sources of a
mixture, a trainer's data, an output folder and the run writing into it) share one contract. The shard members and
rates are described in docs/design.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from manifests import storage
from manifests.errors import PipelineError
from manifests.tasks import SPEECH_TASKS, TASKS
from stages.format import rates

CONTRACT_VERSION = 1
DATASET_FILE = "dataset.json"
AUDIO_REPRS = ("mel", "latent")   # what the model's audio sequence is made of

MEMBERS = {
    "json": "metadata (task, dataset, split, speaker, transcript, phonemes, speech span, durations, sources, recipe)",
    "video.npy": "float16 [T_v, D_v] visual features; row i is the frame shown at i / video_fps seconds",
    "audio.flac": "loudness-normalised 16-bit mono waveform at sample_rate",
    "mel.npy": "float16 [T_m, n_mels] natural-log mel at mel_fps",
    "latent.npy": "float16 [T_l, 2*C] VAE posterior mean then log-variance at latent_fps (optional)",
    "phones.npy": "int16 [N] phoneme ids, speech tasks only (0 is padding, never stored)",
}


class ContractError(PipelineError, ValueError):
    """Data that does not honour its dataset.json, or two contracts that cannot be mixed."""


@dataclass(frozen=True, kw_only=True)
class FeatureContract:
    sample_rate: int
    video_fps: float
    video_dim: int
    video_encoder: dict
    mel: dict
    phones: dict
    loudness: dict
    max_seconds: float
    latent: Optional[dict] = None
    schema_version: int = CONTRACT_VERSION
    members: dict = field(default_factory=lambda: dict(MEMBERS))

    @property
    def mel_fps(self) -> float:
        return self.sample_rate / self.mel["hop_length"]

    @property
    def n_mels(self) -> int:
        return int(self.mel["n_mels"])

    @property
    def vocab_size(self) -> int:
        return len(self.phones["vocab"]["symbols"])

    @property
    def audio_fps(self) -> float:
        """Frames per second of the model's audio sequence (mel patches or VAE latent frames)."""
        return rates.audio_fps(self.mel_fps)

    def audio_dim(self, audio_repr: str) -> int:
        """Channels of one audio frame: 4 mel frames patched together ("mel"), or the VAE's channels ("latent")."""
        if audio_repr == "mel":
            return rates.MEL_PER_AUDIO_FRAME * self.n_mels
        if audio_repr == "latent":
            if not self.latent:
                raise ContractError("audio_repr 'latent' needs shards with VAE latents; these were extracted "
                                    "without (re-extract with --vae, or use 'mel')")
            return int(self.latent["channels"])
        raise ContractError(f"audio_repr must be one of {AUDIO_REPRS}, got {audio_repr!r}")

    def mel_config(self):
        """The `stages.audio.MelConfig` the mel was made with (descriptive extra keys of the record ignored)."""
        from stages.audio import MelConfig

        return MelConfig(**{k: v for k, v in self.mel.items() if k in MelConfig.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureContract":
        if data.get("schema_version") != CONTRACT_VERSION:
            raise ContractError(f"feature contract schema_version {data.get('schema_version')!r} is not "
                                f"{CONTRACT_VERSION}; re-extract with this version of the pipeline")
        return cls(**data)

    def identity(self) -> dict[str, Any]:
        """The parts that decide sample contents (local paths left out, so a moved model still matches)."""
        d = self.to_dict()
        d["video_encoder"] = {k: v for k, v in d["video_encoder"].items() if k not in ("model_dir", "precision")}
        if d["latent"]:
            d["latent"] = {k: v for k, v in d["latent"].items() if k not in ("vae_dir",)}
        return d

    @property
    def feature_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def differences(self, other: "FeatureContract") -> list[str]:
        """Dotted fields whose values differ, e.g. "video_encoder.dim: 32 != 768"."""
        a, b = _flat(self.identity()), _flat(other.identity())
        return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def require_same(contracts: Sequence[tuple[str, "FeatureContract"]], advice: str) -> "FeatureContract":
    """The one contract that every (where, contract) pair shares; a ContractError names the first two places that
    differ, the fields that differ, and `advice` (what to do about it)."""
    (first_where, first), *rest = contracts
    for where, contract in rest:
        if contract.feature_hash != first.feature_hash:
            diff = first.differences(contract)
            raise ContractError(
                f"{first_where} and {where} hold different features (feature_hash {first.feature_hash} != "
                f"{contract.feature_hash}); differing fields: {'; '.join(diff[:8])}"
                + (f" (and {len(diff) - 8} more)" if len(diff) > 8 else "") + f". {advice}")
    return first


def write_dataset_json(out_dir: Path, contract: FeatureContract, *, job: str, config: dict) -> Path:
    doc = {
        "job": job,
        "feature_hash": contract.feature_hash,
        "contract": contract.to_dict(),
        "config": config,
    }
    text = json.dumps(doc, indent=2, sort_keys=True, default=str)
    return storage.write_bytes(storage.join(storage.as_location(out_dir), DATASET_FILE), text.encode("utf-8"))


def read_dataset_json(out_dir: Path) -> tuple[FeatureContract, dict]:
    path = storage.join(storage.as_location(out_dir), DATASET_FILE)
    if not storage.exists(path):
        raise ContractError(f"{path} not found: is {out_dir} the output folder of an extract or synth-mix job?")
    doc = json.loads(storage.read_bytes(path))
    contract = FeatureContract.from_dict(doc["contract"])
    if doc.get("feature_hash") != contract.feature_hash:
        raise ContractError(f"{path}: feature_hash does not match its contract (file edited by hand?)")
    return contract, doc


def _rows_ok(n: int, duration_s: float, rate: float) -> bool:
    return abs(n - rates.frames_in(duration_s, rate)) <= rates.FRAME_TOLERANCE


def check_sample(meta: dict, arrays: dict[str, Optional[np.ndarray]], contract: FeatureContract) -> list[str]:
    """Problems with one sample (empty list when it honours the contract).

    `arrays` maps member names without extension ("video", "mel", "latent", "phones") to arrays or None.
    """
    problems: list[str] = []
    task = meta.get("task")
    if task not in TASKS:
        return [f"task {task!r} not in {TASKS}"]
    duration = float(meta.get("duration_s") or 0.0)
    if not 0 < duration <= contract.max_seconds + 1e-6:
        problems.append(f"duration_s {duration} outside (0, {contract.max_seconds}]")

    def array(name, dtype, ndim):
        a = arrays.get(name)
        if a is None:
            return None
        if a.dtype != np.dtype(dtype) or a.ndim != ndim:
            problems.append(f"{name}: dtype/ndim {a.dtype}/{a.ndim}, expected {dtype}/{ndim}")
            return None
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            problems.append(f"{name}: non-finite values")
        return a

    video = array("video", "float16", 2)
    if meta.get("has_video"):
        if video is None:
            problems.append("video: missing although has_video is true")
        else:
            if video.shape[1] != contract.video_dim:
                problems.append(f"video: dim {video.shape[1]} != {contract.video_dim}")
            if not _rows_ok(len(video), duration, contract.video_fps):
                problems.append(f"video: {len(video)} rows for {duration:.3f}s at {contract.video_fps} fps")
    elif arrays.get("video") is not None:
        problems.append("video: present although has_video is false")

    mel = array("mel", "float16", 2)
    if mel is None:
        problems.append("mel: missing")
    else:
        if mel.shape[1] != contract.n_mels:
            problems.append(f"mel: {mel.shape[1]} bands != {contract.n_mels}")
        if not _rows_ok(len(mel), duration, contract.mel_fps):
            problems.append(f"mel: {len(mel)} frames for {duration:.3f}s at {contract.mel_fps} fps")

    latent = array("latent", "float16", 2)
    if contract.latent:
        if latent is None:
            problems.append("latent: missing although the contract has latents")
        elif latent.shape[1] != 2 * contract.latent["channels"]:
            problems.append(f"latent: width {latent.shape[1]} != 2*{contract.latent['channels']}")
        elif mel is not None and len(latent) != rates.audio_frames(len(mel)):
            problems.append(f"latent: {len(latent)} frames != mel frames {len(mel)} // {rates.MEL_PER_AUDIO_FRAME}")
    elif arrays.get("latent") is not None:
        problems.append("latent: present although the contract has none")

    phones = array("phones", "int16", 1)
    if task in SPEECH_TASKS:
        if phones is None:
            problems.append("phones: missing for a speech task")
        elif len(phones) == 0 or phones.min() < 1 or phones.max() >= contract.vocab_size:
            problems.append(f"phones: ids must be in [1, {contract.vocab_size}) and non-empty")
    elif arrays.get("phones") is not None:
        problems.append(f"phones: present for task {task}")
    return problems
