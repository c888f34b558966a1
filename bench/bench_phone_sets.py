"""Tokens per second of real speech for each phone set, and the speech spans silero-vad found, on an extract output
of the sample corpus (espeak-ng speech with known text and known spans).

    python scripts/learning_proof.py --work runs/lp     # or any extract of the sample corpus
    python bench/bench_phone_sets.py --extract runs/lp/extract --corpus runs/lp/corpus

For every kept speech sample: its transcript through each phone set (stages.phonemes.PHONE_SETS), divided by the
length of its speech span (seconds). Where expected.json knows the true span (visual_tts, joint), the VAD span's
distance to it is reported too.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from stages.format.shard_io import iter_samples
from stages.phonemes import PHONE_SETS, PhonemeStage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extract", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    args = parser.parse_args()
    expected = json.loads((args.corpus / "expected.json").read_text())
    metas = [s["meta"] for s in iter_samples(sorted(str(p) for p in (args.extract / "shards").glob("*.tar")))]
    speech = [m for m in metas if m["task"] in ("tts", "visual_tts", "joint")]
    seconds = [m["speech_span_s"][1] - m["speech_span_s"][0] for m in speech]
    print(f"{len(speech)} speech samples, {sum(seconds):.1f} s of speech; span sources: "
          f"{sorted({m.get('speech_span_source') for m in speech}, key=str)}")
    for name in PHONE_SETS:
        stage = PhonemeStage(phone_set=name)
        rows = stage([{"clip_id": m["clip_id"], "task": m["task"], "transcript": m["transcript"]} for m in speech])
        counts = [len(r["phone_ids"]) for r in rows]
        rates = [n / s for n, s in zip(counts, seconds)]
        print(f"{name:13s} {stage.vocab.version:16s} {sum(counts) / sum(seconds):5.1f} tokens/s overall, per clip "
              f"median {statistics.median(rates):5.1f} (min {min(rates):.1f}, max {max(rates):.1f})")
    errors = []
    for m in speech:
        truth = expected.get(m["clip_id"], {}).get("speech_span_s")
        if truth and m.get("speech_span_source") == "vad":
            start = m["source"]["start_s"] or 0.0
            errors.append(max(abs(m["speech_span_s"][0] + start - truth[0]), abs(m["speech_span_s"][1] + start
                                                                                 - truth[1])))
    if errors:
        print(f"VAD spans vs the known spans ({len(errors)} clips): largest edge error median "
              f"{statistics.median(errors) * 1000:.0f} ms, max {max(errors) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
