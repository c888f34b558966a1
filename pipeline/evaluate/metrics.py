"""The figures `pipeline run evaluate` reports, as plain functions of waves and arrays (16 kHz mono float32 `[N]`).

- mel distance: mean absolute difference of the natural-log mels (the extract recipe, `stages.audio.LogMel`) over
  the frames both waves have; 0 for identical audio.
- loudness: integrated loudness (BS.1770, `stages.audio.measure_loudness`), and its difference from the reference.
- speech-span agreement: silero-vad's span on the generated audio (first speech start to last speech end, the rule
  extract uses) against the span that was asked for: intersection over union and the start and end errors.
- audio-visual offset: the lag that best aligns the audio's onset envelope (half-wave rectified rise of log-mel
  energy, 100 fps) with the picture's motion (how much each frame brightens over the one before, or how far its
  visual features move, 10 fps), searched within +-`max_lag_s`; positive means the sound comes after the motion.
- speaker similarity: the cosine of two speaker embeddings (`[dim]` each; 1 for the same direction).
- Fréchet distance between two sets of embeddings (the FAD formula), and word error rate (jiwer) on normalised
  text.
"""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence

import numpy as np

Seconds = float


def mel_distance(generated_mel: np.ndarray, reference_mel: np.ndarray) -> float:
    """Mean |log-mel difference| over the frames both have (`[T, n_mels]` each)."""
    n = min(len(generated_mel), len(reference_mel))
    if n == 0:
        return math.nan
    return float(np.mean(np.abs(generated_mel[:n].astype(np.float64) - reference_mel[:n].astype(np.float64))))


def detected_span(segments: Sequence[tuple[Seconds, Seconds]]) -> Optional[tuple[Seconds, Seconds]]:
    return (segments[0][0], segments[-1][1]) if segments else None


def span_agreement(found: Optional[tuple[Seconds, Seconds]], asked: tuple[Seconds, Seconds]) -> dict[str, float]:
    """IoU of the detected and the requested speech span, and the start/end errors (detected - asked) in seconds;
    no speech detected gives IoU 0 and no errors."""
    if found is None:
        return {"span_iou": 0.0, "span_start_error_s": math.nan, "span_end_error_s": math.nan}
    inter = max(0.0, min(found[1], asked[1]) - max(found[0], asked[0]))
    union = max(found[1], asked[1]) - min(found[0], asked[0])
    return {"span_iou": inter / union if union > 0 else 0.0, "span_start_error_s": found[0] - asked[0],
            "span_end_error_s": found[1] - asked[1]}


def onset_envelope(log_mel: np.ndarray) -> np.ndarray:
    """Spectral flux of a log-mel `[T, n_mels]`: the summed rise of each band from one frame to the next, `[T]`."""
    mel = log_mel.astype(np.float64)
    rise = np.maximum(np.diff(mel, axis=0, prepend=mel[:1]), 0.0)
    return rise.sum(axis=1)


def motion_from_features(video: np.ndarray) -> np.ndarray:
    """How much each visual feature row `[T_v, D]` differs from the one before (Euclidean), `[T_v]`."""
    feats = video.astype(np.float64)
    return np.linalg.norm(np.diff(feats, axis=0, prepend=feats[:1]), axis=1)


def motion_from_frames(frames: np.ndarray) -> np.ndarray:
    """How much of the picture brightens from one grey frame to the next (`[T, H, W, 3]` uint8 -> `[T]`): the
    half-wave rectified change, the picture's counterpart of the audio's onset flux. Impacts, flashes and things
    appearing brighten it; steady movement lights as much as it darkens and counts half (on the sample corpus it
    placed 10 of 11 clips within 0.05 s, where the absolute difference placed 6)."""
    grey = frames.astype(np.float32).mean(axis=-1)
    return np.maximum(np.diff(grey, axis=0, prepend=grey[:1]), 0.0).mean(axis=(1, 2)).astype(np.float64)


def av_offset(motion: np.ndarray, motion_fps: float, onsets: np.ndarray, onset_fps: float,
              max_lag_s: Seconds = 1.0) -> tuple[float, float]:
    """(lag in seconds that best aligns `onsets` after `motion`, normalised correlation at that lag).

    motion[t] is the change from frame t-1 (shown at (t-1)/fps) to frame t (shown at t/fps), so it stands for every
    onset time in between: onset frame j (at j/onset_fps) takes motion[floor(j * fps / onset_fps) + 1]. Both curves
    are standardised; the lag runs over whole onset frames within +-max_lag_s. A flat curve gives (nan, nan)."""
    n = len(onsets)
    held = motion[np.minimum(np.floor(np.arange(n) * motion_fps / onset_fps).astype(np.int64) + 1, len(motion) - 1)]
    best_lag, best = 0, -math.inf
    for lag in range(-int(max_lag_s * onset_fps), int(max_lag_s * onset_fps) + 1):
        if n - abs(lag) < onset_fps * 0.5:   # under half a second of overlap says nothing
            continue
        x, y = (held[: n - lag], onsets[lag:]) if lag >= 0 else (held[-lag:], onsets[: n + lag])
        x, y = _standardised(x), _standardised(y)   # Pearson correlation over the overlap
        if x is None or y is None:
            continue
        corr = float(np.dot(x, y) / len(x))
        if corr > best:
            best_lag, best = lag, corr
    return (best_lag / onset_fps, best) if math.isfinite(best) else (math.nan, math.nan)


def _standardised(x: np.ndarray) -> Optional[np.ndarray]:
    std = float(np.std(x))
    return None if std < 1e-12 else (x - np.mean(x)) / std


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """a.b / (|a| |b|) of two vectors `[dim]`, in float64 (rounding's 1 + 2e-16 held to 1)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two embedding sets `[N, D]`, `[M, D]` (N, M >= 2)."""
    from scipy import linalg

    if len(a) < 2 or len(b) < 2:
        return math.nan
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(np.atleast_2d(cov_a) @ np.atleast_2d(cov_b), disp=False)
    root = root.real if np.iscomplexobj(root) else root
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(np.atleast_2d(cov_a) + np.atleast_2d(cov_b) - 2 * root))


def normalise_text(text: str) -> str:
    """Lower case, punctuation dropped (apostrophes inside words kept), spaces collapsed."""
    return " ".join(re.sub(r"[^\w' ]+", " ", text.lower()).replace(" '", " ").split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER of one hypothesis against its reference, both normalised (jiwer: substitutions + deletions + insertions
    over reference words)."""
    import jiwer

    ref, hyp = normalise_text(reference), normalise_text(hypothesis)
    if not ref:
        return math.nan
    return float(jiwer.wer(ref, hyp))
