"""From decoded shard samples to a padded training batch: pure functions on arrays (no webdataset, no I/O).

Audio sequences are at `audio_fps` (25/s): VAE latents [T, 128], or mel frames (100/s) patched 4 at a time into
[T // 4, 4 * n_mels] (256 for 64 bands) by `patch_mel`. Padding and masks are made here, never in the shards.
A condition a sample lacks (no video for TTS, no transcript for V2S, no lips, no speaker) is masked: video_mask all
False, phone track all zero, stream mask all False, ref_mask False.

Temporal streams (lip, sync) enter the model at the audio frame rate: `resample_stream` picks, for audio frame k, the
stream row on screen at the frame's centre, (k + 0.5) / audio_fps s (row i is shown from i / fps until (i + 1) / fps,
the contract's presentation-time rule), so a stream at any rate lines up with the audio by time, not by index.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from manifests.tasks import TASKS
from stages.format.rates import AUDIO_FPS, MEL_PER_AUDIO_FRAME

ArrayLike = np.ndarray | Tensor


def stretch_phones(phone_ids: ArrayLike, n_frames: int, speech_start_frame: int, speech_end_frame: int) -> Tensor:
    """The phoneme ids [N] stretched uniformly over frames [start, end) of a track of n_frames; zeros elsewhere.

    Frame f of the span of length L gets id number floor((f - start) * N / L), so every phoneme gets L / N frames
    (as in the paper: no durations are predicted). The span is clipped to [0, n_frames]. If N > L some phonemes get
    no frame; with N == 0 or an empty span the track is all zeros. Returns [n_frames] int64.
    """
    ids = torch.as_tensor(phone_ids).long().flatten()                                  # [N]
    track = torch.zeros(n_frames, dtype=torch.int64)
    start, end = max(0, int(speech_start_frame)), min(n_frames, int(speech_end_frame))
    span = end - start
    if ids.numel() == 0 or span <= 0:
        return track
    index = torch.div(torch.arange(span) * ids.numel(), span, rounding_mode="floor")  # [L] in [0, N)
    track[start:end] = ids[index]
    return track


def patch_mel(mel: ArrayLike, n_mels: Optional[int] = None) -> Tensor:
    """Mel [T, n_mels] at 100 frames/s -> [T // 4, 4 * n_mels] at 25 frames/s, float32.

    Layout: patch k is the concatenation of mel frames 4k, 4k+1, 4k+2, 4k+3, so element n_mels * j + b of patch k
    is band b of frame 4k + j. The last T % 4 frames (less than 40 ms) are dropped. The band count is the array's;
    given `n_mels` (the contract's), a mel with another count is refused.
    """
    mel = torch.as_tensor(mel).float()
    if mel.dim() != 2 or (n_mels is not None and mel.shape[1] != n_mels):
        raise ValueError(f"mel must be [T, {n_mels or 'n_mels'}], got {tuple(mel.shape)}")
    bands = mel.shape[1]
    t4 = mel.shape[0] // MEL_PER_AUDIO_FRAME
    return mel[: t4 * MEL_PER_AUDIO_FRAME].reshape(t4, MEL_PER_AUDIO_FRAME * bands)  # [T4, 4 * n_mels]


def unpatch_mel(patches: ArrayLike, n_mels: Optional[int] = None) -> Tensor:
    """The exact inverse of patch_mel: [T4, 4 * n_mels] -> [4 * T4, n_mels] (n_mels: a quarter of the width
    unless given)."""
    patches = torch.as_tensor(patches)
    bands = n_mels or (patches.shape[-1] // MEL_PER_AUDIO_FRAME if patches.dim() == 2 else 0)
    if patches.dim() != 2 or bands < 1 or patches.shape[1] != MEL_PER_AUDIO_FRAME * bands:
        raise ValueError(f"patches must be [T4, {MEL_PER_AUDIO_FRAME} * n_mels], got {tuple(patches.shape)}")
    return patches.reshape(patches.shape[0] * MEL_PER_AUDIO_FRAME, bands)  # [4 * T4, n_mels]


def span_frames(span_s: tuple[float, float], fps: float) -> tuple[int, int]:
    """The frames [start, end) that overlap a span in seconds (frame k covers [k / fps, (k + 1) / fps))."""
    start_s, end_s = span_s
    return math.floor(start_s * fps), math.ceil(end_s * fps)


def resample_stream(rows: np.ndarray, valid: Optional[np.ndarray], fps: float, n_frames: int,
                    audio_fps: float = AUDIO_FPS) -> tuple[np.ndarray, np.ndarray]:
    """A stream [n, ...] at `fps` -> ([n_frames, ...], mask [n_frames] bool) at audio_fps, by presentation time.

    Audio frame k takes row floor((k + 0.5) / audio_fps * fps); frames past the stream's last row, and rows whose
    `valid` is 0 (no face found), are masked (their values zero).
    """
    rows = np.asarray(rows)
    centres = (np.arange(n_frames) + 0.5) / audio_fps                                   # [n_frames] seconds
    index = np.floor(centres * fps + 1e-9).astype(np.int64)                              # row on screen
    inside = index < len(rows)
    mask = inside.copy()
    picked = np.clip(index, 0, max(len(rows) - 1, 0))
    if valid is not None and len(rows):
        mask &= np.asarray(valid, dtype=bool)[picked]
    out = np.zeros((n_frames, *rows.shape[1:]), dtype=rows.dtype)
    if len(rows):
        out[mask] = rows[picked[mask]]
    return out, mask


def conditions(batch: dict[str, Any]) -> dict[str, Any]:
    """The network's condition inputs of a collated batch (the keyword arguments of VSSFlowDiT.forward)."""
    keys = ("phones_track", "video", "video_mask", "audio_mask", "ref", "ref_mask", "streams", "stream_masks")
    return {k: batch[k] for k in keys if batch.get(k) is not None}


def collate(samples: Sequence[dict[str, Any]], *, audio_fps: float = AUDIO_FPS, video_dim: int | None = None,
            streams: Optional[dict[str, tuple]] = None, ref_dim: Optional[int] = None) -> dict[str, Any]:
    """Pad a list of samples into a batch.

    Each sample: "audio" [T_a, A] at audio_fps, "task" (one of TASKS), optional "video" [T_v, Dv] (None: no video),
    optional "phone_ids" [N] (None: no transcript), optional "speech_span_s" (start, end) in seconds (None: the
    whole clip), optional "streams" {name: (frames [T_a, ...] at audio_fps, mask [T_a])} and "speaker" [R].
    `video_dim` is needed only when no sample of the batch has video. `streams` {name: (frame shape, numpy dtype)}
    names the streams the batch carries (a sample without one has it masked) and `ref_dim` the speaker reference's
    size (a sample without one has ref_mask False).

    Returns x1 [B, T, A] float32, audio_mask [B, T] bool, phones_track [B, T] int64, video [B, Tv, Dv] float32
    (Tv = 0 when no sample has video), video_mask [B, Tv] bool and task (list of str); with `streams`, "streams"
    {name: [B, T, ...]} and "stream_masks" {name: [B, T] bool}; with `ref_dim`, "ref" [B, R] and "ref_mask" [B].
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    audio = [torch.as_tensor(s["audio"]).float() for s in samples]
    videos = [None if s.get("video") is None else torch.as_tensor(s["video"]).float() for s in samples]
    for i, (s, a) in enumerate(zip(samples, audio, strict=True)):
        if s.get("task") not in TASKS:
            raise ValueError(f"sample {i}: task {s.get('task')!r} is not one of {TASKS}")
        if a.dim() != 2 or a.shape[0] == 0 or a.shape[1] != audio[0].shape[1]:
            raise ValueError(f"sample {i}: audio must be [T_a > 0, {audio[0].shape[1]}], got {tuple(a.shape)}")
    present = [v for v in videos if v is not None]
    if video_dim is None:
        if not present:
            raise ValueError("no sample has video: pass video_dim so the empty video tensor has a shape")
        video_dim = present[0].shape[1]
    for i, v in enumerate(videos):
        if v is not None and (v.dim() != 2 or v.shape[1] != video_dim):
            raise ValueError(f"sample {i}: video must be [T_v, {video_dim}], got {tuple(v.shape)}")

    B, A = len(samples), audio[0].shape[1]
    T = max(a.shape[0] for a in audio)
    Tv = max((v.shape[0] for v in present), default=0)
    x1 = torch.zeros(B, T, A)
    audio_mask = torch.zeros(B, T, dtype=torch.bool)
    phones_track = torch.zeros(B, T, dtype=torch.int64)
    video = torch.zeros(B, Tv, video_dim)
    video_mask = torch.zeros(B, Tv, dtype=torch.bool)
    for i, (s, a, v) in enumerate(zip(samples, audio, videos, strict=True)):
        n = a.shape[0]
        x1[i, :n] = a
        audio_mask[i, :n] = True
        if s.get("phone_ids") is not None:
            span = s.get("speech_span_s")
            start, end = (0, n) if span is None else span_frames(span, audio_fps)
            phones_track[i, :n] = stretch_phones(s["phone_ids"], n, start, end)
        if v is not None:
            video[i, : v.shape[0]] = v
            video_mask[i, : v.shape[0]] = True
    batch = {"x1": x1, "audio_mask": audio_mask, "phones_track": phones_track, "video": video,
             "video_mask": video_mask, "task": [s["task"] for s in samples]}
    if streams:
        batch["streams"], batch["stream_masks"] = _collate_streams(samples, streams, T)
    if ref_dim is not None:
        batch["ref"], batch["ref_mask"] = _collate_speaker(samples, ref_dim)
    return batch


def _collate_streams(samples: Sequence[dict[str, Any]], streams: dict[str, tuple], T: int
                     ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    frames, masks = {}, {}
    for name, (shape, dtype) in streams.items():
        frames[name] = torch.zeros(len(samples), T, *shape, dtype=torch.from_numpy(np.zeros(0, dtype)).dtype)
        masks[name] = torch.zeros(len(samples), T, dtype=torch.bool)
        for i, s in enumerate(samples):
            given = (s.get("streams") or {}).get(name)
            if given is None:
                continue
            rows, mask = given
            if tuple(rows.shape[1:]) != tuple(shape) or len(rows) != len(mask) or len(rows) > T:
                raise ValueError(f"sample {i}: stream {name} must be [T_a <= {T}, {shape}] with a mask, got "
                                 f"{tuple(rows.shape)} and {len(mask)}")
            frames[name][i, : len(rows)] = torch.as_tensor(rows)
            masks[name][i, : len(rows)] = torch.as_tensor(mask, dtype=torch.bool)
    return frames, masks


def _collate_speaker(samples: Sequence[dict[str, Any]], ref_dim: int) -> tuple[Tensor, Tensor]:
    ref, ref_mask = torch.zeros(len(samples), ref_dim), torch.zeros(len(samples), dtype=torch.bool)
    for i, s in enumerate(samples):
        if s.get("speaker") is not None:
            vector = torch.as_tensor(s["speaker"]).float().flatten()
            if vector.numel() != ref_dim:
                raise ValueError(f"sample {i}: speaker reference has {vector.numel()} dims, expected {ref_dim}")
            ref[i], ref_mask[i] = vector, True
    return ref, ref_mask
