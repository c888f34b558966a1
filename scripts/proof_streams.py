"""The learning proof's measures of the time-sensitive conditions (issue 11), used by scripts/learning_proof.py.

(d) Lips decide where speech stops. On held-out talking clips whose speech has a pause (the sample corpus speaks
    six words or more as two phrases with 0.3-0.5 s of silence between them and paints the mouth closed there),
    the share of the generated energy of the speech span that falls inside the pause, generating with the clip's
    lip stream against the same model with the lip stream masked. The phone track is stretched uniformly over the
    whole span, so without lips nothing says where the pause is.
(e) The speaker token sets the voice. For held-out speech clips, speech generated with another speaker's reference
    (a training clip of that voice) is embedded by the speaker encoder extract uses (Resemblyzer) and compared with
    the mean training embedding of that voice and of the clip's own voice. Ablation: the clip's own reference.
    The other voice is the one whose mean embedding is farthest from the clip's own (the corpus's en-us and en-gb
    are one espeak voice with two accents: the encoder barely tells them apart even on the true audio).
(f) Solvers: steps taken and mel L1 to the true audio, Euler, Heun and dopri5 (adaptive).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

Edit = Optional[Callable[[dict], dict]]


def mels_for(model, ckpt, sample: dict, prep, *, seeds, guidance: float, unconditional: bool = False,
             edit: Edit = None, method: str = "euler", steps: int = 25, stats: Optional[list] = None) -> list:
    """log-mel [4T, 64] per seed for one prepared sample, its conditions edited by `edit` (an ablation)."""
    from model.batch import conditions
    from model.data import make_batch
    from model.flow import null_conditions
    from model.generate import audio_to_mel, sample_audio

    cond = conditions(make_batch([sample], prep))
    if edit is not None:
        cond = edit(cond)
    if unconditional:
        cond, guidance = null_conditions(cond), 1.0
    out = []
    for s in seeds:
        info: dict = {}
        audio = sample_audio(model, cond, steps=steps, guidance=guidance, seed=s, method=method, stats=info)
        out.append(audio_to_mel(audio[0], ckpt))
        if stats is not None:
            stats.append(info.get("nfe", steps))
    return out


def power(mel: np.ndarray) -> np.ndarray:
    """Energy per mel frame: the sum over bands of exp(2 * log-mel)."""
    return np.exp(2 * mel.astype(np.float64)).sum(axis=1)


def find_pause(true_mel: np.ndarray, span_s, min_s: float = 0.2) -> Optional[tuple[int, int]]:
    """Mel frames [a, b) of the longest quiet run inside the speech span (power under 1% of the span's median,
    at least min_s long, 3 frames trimmed at each end), or None."""
    lo, hi = math.floor(span_s[0] * 100) + 10, math.ceil(span_s[1] * 100) - 10   # not the span's own edges
    p = power(true_mel)[lo:hi]
    if len(p) < 50:
        return None
    quiet = p < 0.01 * np.median(p)
    best, start = (0, 0), None
    for i, q in enumerate(np.append(quiet, False)):
        if q and start is None:
            start = i
        elif not q and start is not None:
            best, start = max(best, (i - start, start)), None
    length, first = best
    if length < min_s * 100:
        return None
    return lo + first + 3, lo + first + length - 3


def pause_shares(model, ckpt, samples, prep, true_mel, seeds, guidance) -> list[dict]:
    """(d): per held-out talking clip with a pause, the generated energy share inside it, with and without lips
    (a model built without the lip stream: its share as "lips_masked")."""
    from model.flow import without_streams

    has_lips = "lip" in model.cfg.streams
    variants = (("with_lips", None), ("lips_masked", lambda c: without_streams(c, ["lip"])))
    rows = []
    for s in samples:
        if s["task"] != "visual_tts" or s.get("speech_span_s") is None:
            continue
        target = true_mel(s, ckpt)
        pause = find_pause(target, s["speech_span_s"])
        if pause is None:
            continue
        a, b = pause
        lo, hi = math.floor(s["speech_span_s"][0] * 100), math.ceil(s["speech_span_s"][1] * 100)
        row = {"key": s["key"], "pause_s": [a / 100, b / 100], "true": float(power(target)[a:b].sum() /
                                                                          power(target)[lo:hi].sum())}
        for label, edit in variants if has_lips else variants[1:]:
            shares = [float(power(m)[a:b].sum() / power(m)[lo:hi].sum())
                      for m in mels_for(model, ckpt, s, prep, seeds=seeds, guidance=guidance, edit=edit)]
            row[label] = float(np.mean(shares))
        rows.append(row)
    return rows


def voice_means(extract: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per voice: the mean training speaker embedding (normalised), and one training clip's embedding (a reference
    recording of that voice)."""
    from pipeline.api import open_output

    vectors = defaultdict(list)
    for sample in open_output(extract).filter(split="train", task=["tts", "visual_tts"]):
        if sample.arrays.get("speaker") is not None:
            vectors[sample.meta["speaker"]].append(sample.arrays["speaker"].astype(np.float64))
    means = {v: np.mean(x, axis=0) / np.linalg.norm(np.mean(x, axis=0)) for v, x in vectors.items()}
    return means, {v: x[0].astype(np.float32) for v, x in vectors.items()}


def speaker_similarity(model, ckpt, samples, prep, extract: Path, seeds, guidance) -> list[dict]:
    """(e): for held-out speech clips, cosine of the generated voice to the reference's voice and to its own."""
    from model.vocoder import load_vocoder
    from stages.base import Reject
    from stages.format.contract import FeatureContract
    from stages.speaker import SpeakerStage

    means, refs = voice_means(extract)
    meta_voice = _held_out_voices(extract)
    encoder = SpeakerStage()
    encoder.setup()
    vocoder = load_vocoder(None, FeatureContract.from_dict(ckpt["contract"]).mel_config(), seed=0)
    rows = []
    for s in samples:
        own = meta_voice.get(s["key"])
        if s["task"] not in ("tts", "visual_tts") or own not in means or s.get("speaker") is None:
            continue
        other = min((v for v in means if v != own), key=lambda v: float(means[v] @ means[own]))
        span = s["speech_span_s"] or (0.0, len(s["audio"]) / 25)
        row = {"key": s["key"], "own": own, "other": other}
        for label, ref in (("own_ref", refs[own]), ("other_ref", refs[other])):
            sims = {"to_own": [], "to_other": []}
            for mel in mels_for(model, ckpt, dict(s, speaker=ref), prep, seeds=seeds, guidance=guidance):
                wave = vocoder(mel)
                try:
                    e = encoder.embed(wave[int(span[0] * 16000):int(span[1] * 16000)].astype(np.float32))
                except Reject:
                    continue
                sims["to_own"].append(float(e @ means[own]))
                sims["to_other"].append(float(e @ means[other]))
            row[label] = {k: float(np.mean(v)) if v else float("nan") for k, v in sims.items()}
        rows.append(row)
    return rows


def _held_out_voices(extract: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    index = pq.read_table(extract / "index.parquet", columns=["key", "speaker"]).to_pylist()
    return {r["key"]: r["speaker"] for r in index if r["speaker"]}


def solver_table(model, ckpt, samples, prep, true_mel, seeds, guidance) -> list[dict]:
    """(f): mean NFE and mel L1 to the true audio over the held-out clips, per solver."""
    rows = []
    for method, steps in (("euler", 25), ("euler", 10), ("heun", 12), ("dopri5", 0)):
        nfe, l1 = [], []
        for s in samples:
            target = true_mel(s, ckpt)
            mels = mels_for(model, ckpt, s, prep, seeds=seeds, guidance=guidance, method=method,
                            steps=max(steps, 1), stats=nfe)
            l1.append(float(np.mean([np.abs(m[: len(target)] - target).mean() for m in mels])))
        rows.append({"method": method, "steps": steps or "adaptive", "nfe": float(np.mean(nfe)),
                     "mel_l1": float(np.mean(l1))})
    return rows


def summarise(pauses: list[dict], speakers: list[dict]) -> dict[str, Any]:
    """The issue's criteria: pause share with lips at most half of the masked one; other-speaker output closer to
    the other speaker in most clips; and the same on the mean."""
    out: dict[str, Any] = {}
    if pauses and "with_lips" in pauses[0]:
        w, m = np.mean([p["with_lips"] for p in pauses]), np.mean([p["lips_masked"] for p in pauses])
        out["pause"] = {"clips": len(pauses), "with_lips": float(w), "lips_masked": float(m),
                        "true": float(np.mean([p["true"] for p in pauses])), "ratio": float(w / m),
                        "clips_at_most_half": int(sum(p["with_lips"] <= 0.5 * p["lips_masked"] for p in pauses)),
                        "holds": bool(w <= 0.5 * m)}
    if speakers:
        closer = [r["other_ref"]["to_other"] > r["other_ref"]["to_own"] for r in speakers]
        own_closer = [r["own_ref"]["to_own"] > r["own_ref"]["to_other"] for r in speakers]
        out["speaker"] = {"clips": len(speakers), "other_ref_closer_to_other": int(sum(closer)),
                          "own_ref_closer_to_own": int(sum(own_closer)), "holds": sum(closer) > len(closer) / 2}
    return out
