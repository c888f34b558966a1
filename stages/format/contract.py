"""The feature contract in `dataset.json`, and the check every sample of a shard must pass.

`FeatureContract` records rates, dims, dtypes, encoder and vocabulary; its `feature_hash` changes whenever a sample
produced under it would differ. `check_sample` is the one validation used by the writers (what they write), by the
trainer's loader (what it reads) and by tests. `require_same` is the one check that several folders (sources of a
mixture, a trainer's data, an output folder and the run writing into it) share one contract. The shard members and
rates are described in docs/design.md.

Temporal streams. The 10 fps CLIP stream (`video_*` fields, member `video.npy`) is one stream; further ones
(`streams`: the mouth-region `lip`, the synchrony `sync`) each record their rate, frame selection rule, region,
encoder, member `K.<name>.npy`, dtype, per-frame shape, the tasks that carry them and their validity member
`K.<name>_valid.npy`. `speaker` records the utterance embedding `K.speaker.npy`. Contracts written before streams
existed have neither: their hash and members are unchanged, so those outputs stay readable as they are.
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
from manifests.tasks import SPEECH_TASKS, TASKS, VIDEO_TASKS
from stages.format import rates

CONTRACT_VERSION = 1
DATASET_FILE = "dataset.json"
AUDIO_REPRS = ("mel", "latent")   # what the model's audio sequence is made of

# member name -> the row key the stream stages fill ("speaker" on a row is the manifest's speaker id)
STREAM_ROW_KEYS = {"lip": "lip", "lip_valid": "lip_valid", "sync": "sync", "speaker": "speaker_ref"}
OPTIONAL_FIELDS = ("streams", "speaker")   # left out of dataset.json (and the hash) when absent

MEMBERS = {
    "json": "metadata (task, dataset, split, speaker, transcript, phonemes, speech span, durations, sources, recipe)",
    "video.npy": "float16 [T_v, D_v] visual features; row i is the frame shown at i / video_fps seconds",
    "audio.flac": "loudness-normalised 16-bit mono waveform at sample_rate",
    "mel.npy": "float16 [T_m, n_mels] natural-log mel at mel_fps",
    "latent.npy": "float16 [T_l, 2*C] VAE posterior mean then log-variance at latent_fps (optional)",
    "phones.npy": "int16 [N] phoneme ids, speech tasks only (0 is padding, never stored)",
}


STREAM_RULE = "presentation-time"   # row i of a stream is the frame on screen at i / fps (stages.decode)


class ContractError(PipelineError, ValueError):
    """Data that does not honour its dataset.json, or two contracts that cannot be mixed."""


def stream_record(*, fps: float, region: str, encoder: dict, dtype: str, frame_shape: Sequence[int],
                  tasks: Sequence[str], valid: bool) -> dict[str, Any]:
    """One temporal stream as the contract records it (docs/design.md, "Shards")."""
    return {"fps": float(fps), "rule": STREAM_RULE, "region": region, "encoder": dict(encoder), "dtype": dtype,
            "frame_shape": [int(n) for n in frame_shape], "tasks": sorted(tasks), "valid": bool(valid)}


def stream_members(streams: Optional[dict], speaker: Optional[dict]) -> dict[str, str]:
    """MEMBERS plus the members of the contract's extra streams and speaker reference."""
    members = dict(MEMBERS)
    for name, s in sorted((streams or {}).items()):
        shape = ", ".join(str(n) for n in s["frame_shape"])
        members[f"{name}.npy"] = (f"{s['dtype']} [T, {shape}] {s['region']} stream; row i is the frame shown at "
                                  f"i / {s['fps']:g} seconds ({', '.join(s['tasks'])})")
        if s["valid"]:
            members[f"{name}_valid.npy"] = f"uint8 [T] 1 where {name} row i holds a found {s['region']}, else 0"
    if speaker:
        members["speaker.npy"] = (f"float32 [{speaker['dim']}] utterance embedding of the speech span "
                                  f"({', '.join(speaker['tasks'])})")
    return members


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
    streams: Optional[dict] = None     # extra temporal streams by name (stream_record); None before streams existed
    speaker: Optional[dict] = None     # the speaker reference (dim, tasks, encoder); None when not extracted
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

    def all_streams(self) -> dict[str, dict[str, Any]]:
        """Every temporal stream by member name: the 10 fps visual stream first, then the extra ones."""
        video = stream_record(fps=self.video_fps, region="frame", encoder=self.video_encoder, dtype="float16",
                              frame_shape=[self.video_dim], tasks=VIDEO_TASKS, valid=False)
        return {"video": video, **dict(sorted((self.streams or {}).items()))}

    def describe(self) -> dict[str, Any]:
        """What dataset.json says about the conditions beside the contract: every stream and the speaker."""
        return {"streams": self.all_streams(), "speaker": self.speaker}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in OPTIONAL_FIELDS:
            if d[name] is None:
                del d[name]   # a contract without them reads and hashes exactly as one written before they existed
        return d

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
        for s in (d.get("streams") or {}).values():
            s["encoder"] = {k: v for k, v in s["encoder"].items() if k not in ("model_dir", "precision")}
        if d.get("speaker"):
            d["speaker"]["encoder"] = {k: v for k, v in d["speaker"]["encoder"].items() if k != "model_dir"}
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


def conditions_carried(contract: FeatureContract) -> list[str]:
    """The stream members a contract's samples carry, e.g. ["video", "lip", "speaker"]."""
    return list(contract.all_streams()) + (["speaker"] if contract.speaker else [])


def require_same(contracts: Sequence[tuple[str, "FeatureContract"]], advice: str) -> "FeatureContract":
    """The one contract that every (where, contract) pair shares; a ContractError names the first two places that
    differ, the fields that differ, and `advice` (what to do about it)."""
    (first_where, first), *rest = contracts
    for where, contract in rest:
        mine, theirs = conditions_carried(first), conditions_carried(contract)
        if mine != theirs:
            raise ContractError(
                f"{first_where} and {where} carry different streams: {', '.join(mine)} against "
                f"{', '.join(theirs)}. Folders are only combined when they were extracted with the same streams "
                f"(lip, sync, speaker options). {advice}")
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
        "conditions": contract.describe(),
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

    problems += _stream_problems(meta, arrays, contract, duration, array)
    phones = array("phones", "int16", 1)
    if task in SPEECH_TASKS:
        if phones is None:
            problems.append("phones: missing for a speech task")
        elif len(phones) == 0 or phones.min() < 1 or phones.max() >= contract.vocab_size:
            problems.append(f"phones: ids must be in [1, {contract.vocab_size}) and non-empty")
    elif arrays.get("phones") is not None:
        problems.append(f"phones: present for task {task}")
    return problems


def _stream_problems(meta: dict, arrays: dict, contract: FeatureContract, duration: float, array) -> list[str]:
    """Problems with the extra streams and the speaker reference of one sample (see check_sample)."""
    problems: list[str] = []
    task = meta["task"]
    known = {"video", "mel", "latent", "phones"}
    for name, s in (contract.streams or {}).items():
        known |= {name, f"{name}_valid"}
        rows = array(name, s["dtype"], 1 + len(s["frame_shape"]))
        valid = array(f"{name}_valid", "uint8", 1) if s["valid"] else None
        if task not in s["tasks"]:
            for member in (name, f"{name}_valid"):
                if arrays.get(member) is not None:
                    problems.append(f"{member}: present for task {task}")
            continue
        if rows is None:
            problems.append(f"{name}: missing for task {task}")
            continue
        if list(rows.shape[1:]) != list(s["frame_shape"]):
            problems.append(f"{name}: frame shape {list(rows.shape[1:])} != {s['frame_shape']}")
        if not _rows_ok(len(rows), duration, s["fps"]):
            problems.append(f"{name}: {len(rows)} rows for {duration:.3f}s at {s['fps']:g} fps")
        if s["valid"]:
            if valid is None:
                problems.append(f"{name}_valid: missing")
            elif len(valid) != len(rows) or valid.max(initial=0) > 1:
                problems.append(f"{name}_valid: {len(valid)} flags in {{0, 1}} expected for {len(rows)} rows")
    if contract.speaker:
        known.add("speaker")
        speaker = array("speaker", "float32", 1)
        if task in contract.speaker["tasks"]:
            if speaker is None:
                problems.append(f"speaker: missing for task {task}")
            elif len(speaker) != contract.speaker["dim"]:
                problems.append(f"speaker: dim {len(speaker)} != {contract.speaker['dim']}")
        elif speaker is not None:
            problems.append(f"speaker: present for task {task}")
    extra = sorted(k for k, v in arrays.items() if v is not None and k not in known)
    if extra:
        problems.append(f"members {extra} are not in the contract")
    return problems
