"""`pipeline run evaluate`: every generated clip (`GENERATED/KEY.wav`, 16 kHz mono) measured against its
reference, per clip and on average; a table (metrics.parquet), a JSON (summary.json) and a plot (metrics.png).

What is measured needs no weights beyond what ships: mel distance and loudness against the reference audio,
speech-span agreement (silero-vad, inside its wheel) for speech clips, the audio-visual onset offset for video
clips, speaker similarity for speech clips (the speaker stage's Resemblyzer encoder, inside its wheel, on the
generated and the reference speech span alike); WER with a local ASR model directory, a Fréchet distance with a
local audio-embedding directory. The span asked for comes from `GENERATED/generated.jsonl` (written by
`generate-batch`), else the reference's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from manifests.atomic import atomic_write_parquet, atomic_write_text
from manifests.errors import UsageError
from manifests.tasks import SPEECH_TASKS, VIDEO_TASKS
from pipeline.evaluate import metrics
from pipeline.evaluate.references import Reference, load_references
from stages.audio import measure_loudness
from stages.base import Reject
from stages.speaker import cut_span

SAMPLE_RATE = 16000
GENERATED_LOG = "generated.jsonl"
COLUMNS = ("duration_s", "loudness_lufs", "loudness_diff_db", "mel_distance", "span_iou", "span_start_error_s",
           "span_end_error_s", "av_offset_s", "av_correlation", "speaker_similarity", "wer")


@dataclass(frozen=True)
class Tools:
    """What every clip is measured with, loaded once."""

    logmel: Any
    vad: Any
    speaker: Any            # stages.speaker.SpeakerStage, set up
    transcriber: Any = None
    embedder: Any = None
    max_lag_s: float = 1.0


def read_generated(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """({key: wave}, {key: what generate-batch recorded}) of a folder of KEY.wav files."""
    import soundfile as sf

    folder = Path(folder)
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise UsageError(f"{folder} holds no .wav files: give the folder generate-batch wrote (KEY.wav per clip)")
    waves = {}
    for path in files:
        wave, rate = sf.read(path, dtype="float32", always_2d=True)
        if rate != SAMPLE_RATE:
            raise UsageError(f"{path} is {rate} Hz; evaluate reads 16 kHz audio, as generate writes it")
        waves[path.stem] = wave.mean(axis=1)                                                     # [N] mono
    log = folder / GENERATED_LOG
    asked = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                asked[record["key"]] = record
    return waves, asked


def measure_clip(key: str, wave: np.ndarray, ref: Optional[Reference], asked: dict, tools: Tools) -> dict[str, Any]:
    task = asked.get("task") or (ref.task if ref else None)
    loudness = measure_loudness(wave, SAMPLE_RATE)
    row: dict[str, Any] = {"key": key, "task": task, "duration_s": len(wave) / SAMPLE_RATE,
                           "loudness_lufs": _finite(loudness), "note": None}
    mel = tools.logmel(wave)                                                                     # [T, n_mels]
    if ref is None or ref.audio is None:
        row["note"] = ref.problem if ref is not None else "no reference clip of this key"
    else:
        row["loudness_diff_db"] = _finite(loudness - measure_loudness(ref.audio, SAMPLE_RATE))
        row["mel_distance"] = metrics.mel_distance(mel, tools.logmel(ref.audio))
    span = asked.get("speech_span_s") or (ref.speech_span_s if ref else None)
    if row["task"] in SPEECH_TASKS and span:
        found = metrics.detected_span(tools.vad.speech_segments(wave))
        row.update(metrics.span_agreement(found, (float(span[0]), float(span[1]))))
    if row["task"] in SPEECH_TASKS and ref is not None and ref.audio is not None:
        row.update(measure_speaker(wave, span, ref, tools.speaker))   # the reference is there: no note before
    if row["task"] in VIDEO_TASKS and ref is not None and ref.motion is not None:
        offset, corr = metrics.av_offset(ref.motion, ref.motion_fps, metrics.onset_envelope(mel),
                                         tools.logmel.config.frames_per_second, tools.max_lag_s)
        row.update(av_offset_s=offset, av_correlation=corr)
    transcript = asked.get("transcript") or (ref.transcript if ref else None)
    if tools.transcriber is not None and transcript and row["task"] in SPEECH_TASKS:
        row["hypothesis"] = tools.transcriber(wave)
        row["wer"] = metrics.word_error_rate(transcript, row["hypothesis"])
    return row


def measure_speaker(wave: np.ndarray, span: Optional[Sequence[float]], ref: Reference, speaker: Any) -> dict:
    """speaker_similarity: the cosine of the generated audio's embedding over the span asked for and the reference
    audio's over its own speech span (the whole clip where there is none), both by `SpeakerStage.embed`; None with
    the note why where the encoder finds no voice on a side."""
    embedded, why = {}, []
    for side, audio, cut in (("generated", wave, span), ("reference", ref.audio, ref.speech_span_s)):
        a, b = (float(cut[0]), float(cut[1])) if cut else (0.0, len(audio) / SAMPLE_RATE)
        try:
            embedded[side] = speaker.embed(cut_span(audio, SAMPLE_RATE, a, b))
        except Reject as e:
            why.append(f"the {side} span {a:.2f}-{b:.2f} s: {e}")
    if why:
        return {"speaker_similarity": None, "note": "speaker similarity not measured: " + "; ".join(why)}
    return {"speaker_similarity": metrics.cosine_similarity(embedded["generated"], embedded["reference"])}


def _finite(x: Optional[float]) -> Optional[float]:
    return float(x) if x is not None and math.isfinite(x) else None


def summarise(rows: list[dict[str, Any]], fad: Optional[float], notes: list[str]) -> dict[str, Any]:
    means = {}
    for column in COLUMNS:
        values = [r[column] for r in rows if r.get(column) is not None and math.isfinite(r[column])]
        means[column] = {"mean": float(np.mean(values)) if values else None, "clips": len(values)}
    if any(r.get("av_offset_s") is not None for r in rows):
        offsets = [abs(r["av_offset_s"]) for r in rows if r.get("av_offset_s") is not None
                   and math.isfinite(r["av_offset_s"])]
        means["abs_av_offset_s"] = {"mean": float(np.mean(offsets)) if offsets else None, "clips": len(offsets)}
    return {"clips": len(rows), "metrics": means, "frechet_distance": fad, "notes": notes}


def plot_metrics(rows: list[dict[str, Any]], path: Path) -> Path:
    """One panel per measured figure: its value for every clip, the mean as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 1.8 * len(shown)), squeeze=False)
    for ax, column in zip(axes[:, 0], shown):
        values = [np.nan if r.get(column) is None else r[column] for r in rows]
        ax.bar(range(len(rows)), values, color="steelblue")
        if np.isfinite(values).any():
            ax.axhline(np.nanmean(values), color="darkorange", lw=1)
        ax.set_ylabel(column, fontsize=8)
        ax.set_xticks(range(len(rows)), [r["key"][:18] for r in rows], fontsize=6, rotation=60, ha="right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def load_tools(asr_model: Optional[Path], embedding_model: Optional[Path], max_lag_s: float) -> Tools:
    from pipeline.evaluate.models import AudioEmbedder, Transcriber
    from stages.audio import LogMel
    from stages.speaker import SpeakerStage
    from stages.speech_span import SpeechSpanStage

    vad = SpeechSpanStage(data_root=".", decode=None, mel=None, loudness=None)   # only speech_segments is used:
    # the very detector (and settings) extract places speech spans with
    speaker = SpeakerStage()      # Resemblyzer's packaged weights, extract's default speaker encoder
    speaker.setup()
    return Tools(logmel=LogMel(), vad=vad, speaker=speaker, max_lag_s=max_lag_s,
                 transcriber=Transcriber(asr_model) if asr_model else None,
                 embedder=AudioEmbedder(embedding_model) if embedding_model else None)


def evaluate(generated: Path, reference: Path, out: Path, *, data_root: Optional[Path] = None,
             asr_model: Optional[Path] = None, embedding_model: Optional[Path] = None,
             max_lag_s: float = 1.0) -> dict[str, Any]:
    """Measure every KEY.wav of `generated` against `reference`; write OUT/metrics.parquet, summary.json and
    metrics.png; return the summary (with the per-clip rows under "rows")."""
    import pyarrow as pa

    waves, asked = read_generated(generated)
    refs = load_references(reference, sorted(waves), data_root=data_root)
    tools = load_tools(asr_model, embedding_model, max_lag_s)
    rows = [measure_clip(key, wave, refs.get(key), asked.get(key, {}), tools) for key, wave in waves.items()]
    notes = []
    unvoiced = [r["key"] for r in rows if r["task"] in SPEECH_TASKS and r.get("speaker_similarity") is None]
    if unvoiced:
        notes.append(f"speaker similarity not measured for {len(unvoiced)} speech clip(s) ({', '.join(unvoiced[:5])}"
                     f"{', ...' if len(unvoiced) > 5 else ''}): no voice found or no reference; see each clip's note")
    if tools.transcriber is None:
        notes.append("WER skipped: give --asr-model DIR (a local speech recogniser) to measure it")
    fad = None
    if tools.embedder is None:
        notes.append("Fréchet distance skipped: give --embedding-model DIR (a local audio encoder) to measure it")
    else:
        pairs = [(waves[r["key"]], refs[r["key"]].audio) for r in rows if r["key"] in refs and
                 refs[r["key"]].audio is not None]
        fad = metrics.frechet_distance(np.stack([tools.embedder(g) for g, _ in pairs]),
                                       np.stack([tools.embedder(r) for _, r in pairs])) if len(pairs) >= 2 else None
    summary = summarise(rows, fad, notes)
    out = Path(out)
    columns = ["key", "task", *COLUMNS, "hypothesis", "note"]
    atomic_write_parquet(out / "metrics.parquet", pa.Table.from_pylist([{c: r.get(c) for c in columns}
                                                                        for r in rows]))
    atomic_write_text(out / "summary.json", json.dumps({**summary, "generated": str(generated),
                                                        "reference": str(reference)}, indent=2))
    plot_metrics(rows, out / "metrics.png")
    return {**summary, "rows": rows}
