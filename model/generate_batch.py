"""Generation for every row of a manifest with one loaded model: `OUT/KEY.wav` per clip and `OUT/generated.jsonl`,
one record per row (what was asked, what was made, or why the row was refused), which `pipeline run evaluate` reads.

Each clip is made exactly as `generate()` makes it (model/generate.py: the same condition extraction, sampler and
vocoder, the same seed), only the checkpoint, its contract and the vocoder are loaded once. A row gives its video
(`video_path` under the data root; none for tts), transcript, speech span (manifest time) and length (`end_s`); a
row whose trim window starts after 0 s is refused (`generate` reads a clip from its start: cut the clip first), as is
any row `generate` refuses (a rejected video, a span outside the clip, ...): the record says why, the batch goes on.
A re-run skips rows whose wav is already written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from manifests.atomic import atomic_write_text
from manifests.errors import PipelineError
from manifests.validate import read_manifest
from model.generate import GenerateError, audio_to_mel, extract_conditions, load_model, sample_audio, write_wav
from model.generate_conditions import (
    check_conditions,
    conditions_batch,
    conditions_used,
    model_conditions,
    speaker_embedding,
)
from model.vocoder import load_vocoder, log_mel_bounds
from stages.device import pick_device
from stages.format.contract import FeatureContract

LOG = "generated.jsonl"


def row_request(row: dict[str, Any], data_root: Path) -> dict[str, Any]:
    """What generate() is asked for one manifest row: video, transcript, span (clip time), duration."""
    start = float(row.get("start_s") or 0.0)
    if start > 0:
        raise GenerateError(f"trim window starts at {start} s; generate reads a clip from its start (cut it first)")
    span = None
    if row.get("transcript") and row.get("speech_start_s") is not None and row.get("speech_end_s") is not None:
        span = (float(row["speech_start_s"]), float(row["speech_end_s"]))
    duration = float(row["end_s"]) if row.get("end_s") is not None else None
    video = data_root / row["video_path"] if row.get("video_path") else None
    if video is None and row["task"] != "tts":
        raise GenerateError(f"task {row['task']} needs a video_path")
    if video is None and duration is None:
        raise GenerateError("a tts row needs end_s (the length to generate)")
    return {"video": video, "transcript": row.get("transcript") if row["task"] != "v2s" else None,
            "speech_span": span, "duration": duration}


def generate_one(model, checkpoint: dict, contract: FeatureContract, vocoder, request: dict[str, Any], *,
                 steps: int, method: str, guidance: float, seed: int, device: torch.device,
                 visual_model=None, vae_dir=None, speaker_ref=None, use_lip: bool = True
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """One clip, as generate() makes it, with the model and vocoder already loaded."""
    conds = extract_conditions(contract, request["video"], transcript=request["transcript"],
                               speech_span=request["speech_span"], duration=request["duration"],
                               visual_model=visual_model, device=str(device), streams=tuple(model.cfg.streams),
                               speaker_ref=speaker_ref)
    batch = conditions_batch(conds, model.cfg, contract.mel_config().hop_length)
    cond = model_conditions(batch, use_lip=use_lip, device=device)
    solver: dict[str, Any] = {}
    audio = sample_audio(model, cond, steps=steps, method=method, guidance=guidance, seed=seed,
                         stats=solver)[0]                                                          # [T, A]
    mel = audio_to_mel(audio, checkpoint, vae_dir=vae_dir)                                         # [4T, n_mels]
    low, high = log_mel_bounds(contract.mel_config())
    wave = vocoder(np.clip(mel, low, high))[: conds["n_samples"]]                                  # [N]
    if not np.isfinite(wave).all():
        raise GenerateError("the generated wave holds NaN or Inf")
    return wave, {"task": conds["task"], "duration_s": conds["duration_s"], "speech_span_s": conds["speech_span_s"],
                  "nfe": solver["nfe"], "conditions": conditions_used(conds, batch, use_lip=use_lip),
                  "warnings": conds["warnings"]}


def generate_batch(ckpt: Path, manifest: Path, data_root: Path, out_dir: Path, *, steps: int = 25,
                   method: str = "euler", guidance: float = 3.0, seed: int = 0, vocoder_dir: Optional[Path] = None,
                   visual_model: Optional[Path] = None, vae_dir: Optional[Path] = None, device: str = "auto",
                   use_ema: bool = True, limit: Optional[int] = None, speaker_ref: Optional[Path] = None,
                   use_lip: bool = True, progress: Optional[Callable[[dict], None]] = None) -> dict[str, Any]:
    """Generate every row of `manifest` (the first `limit`); returns counts and the records of this run.
    `speaker_ref` (a wav) is every row's speaker reference and `use_lip=False` masks every row's lip stream, as
    generate() takes them (the manifest has no per-row reference column)."""
    out_dir, data_root = Path(out_dir), Path(data_root)
    rows = read_manifest(manifest).to_pylist()[:limit]
    dev = torch.device(pick_device(device))
    model, checkpoint = load_model(ckpt, use_ema=use_ema, device=dev)
    contract = FeatureContract.from_dict(checkpoint["contract"])
    check_conditions(model.cfg, contract, speaker_ref=speaker_ref, use_lip=use_lip)
    if speaker_ref is not None:   # a reference without voice fails the batch once, not every row
        speaker_embedding(contract, speaker_ref, str(dev))
    vocoder = load_vocoder(vocoder_dir, contract.mel_config(), device=dev, seed=seed)
    log = out_dir / LOG
    records = {r["key"]: r for r in map(json.loads, log.read_text().splitlines())} if log.is_file() else {}
    made = refused = skipped = 0
    for i, row in enumerate(rows):
        key = row["clip_id"]
        wav = out_dir / f"{key}.wav"
        if wav.is_file() and records.get(key, {}).get("status") == "generated":
            skipped += 1
            continue
        started = time.perf_counter()
        record = {"key": key, "task": row["task"], "transcript": row.get("transcript"), "seed": seed,
                  "steps": steps, "method": method, "guidance": guidance, "checkpoint": str(ckpt)}
        try:
            wave, info = generate_one(model, checkpoint, contract, vocoder, row_request(row, data_root),
                                      steps=steps, method=method, guidance=guidance, seed=seed, device=dev,
                                      visual_model=visual_model, vae_dir=vae_dir, speaker_ref=speaker_ref,
                                      use_lip=use_lip)
            write_wav(wav, wave, contract.sample_rate)
            record.update(status="generated", **info, seconds=round(time.perf_counter() - started, 3))
            made += 1
        except PipelineError as e:   # a refused row (GenerateError, a rejected video, ...): said, and the batch goes on
            record.update(status="refused", reason=str(e))
            refused += 1
        records[key] = record
        atomic_write_text(log, "".join(json.dumps(r, default=float) + "\n" for r in records.values()))
        if progress:
            progress({"done": i + 1, "total": len(rows), "key": key, "status": record["status"]})
    return {"rows": len(rows), "generated": made, "refused": refused, "skipped": skipped, "out": str(out_dir),
            "refusals": {k: r["reason"] for k, r in records.items() if r["status"] == "refused"}}
