"""Timed words: cutting a long transcribed clip into pieces that each fit the extract's `max_seconds`, at word
boundaries, so that no piece keeps words its audio does not hold.

A piece runs from a word's start to a later word's end; its trim window adds up to `margin_s` of the silence on
either side, never reaching into a neighbouring word. Each piece is its own clip: clip_id `{parent}_{start}_{end}`
(the window in centiseconds), its text the piece's words, its speech span their first start and last end, its
parent_id the clip it was cut from. A single word longer than max_seconds stays one piece (extract rejects it:
`speech_too_long`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from manifests.schema import Clip, Word

DEFAULT_MAX_SECONDS = 10.0   # extract's decode.max_seconds: give the same value when it is changed
MARGIN_S = 0.2               # silence kept around a piece's words when the neighbours leave room


def group_words(words: list[Word], max_seconds: float, margin_s: float = MARGIN_S) -> list[tuple[int, int]]:
    """[first, last) word index ranges, greedy, each spanning at most max_seconds from its first word's start to its
    last word's end (with room for the margins where possible)."""
    groups, first = [], 0
    for i in range(1, len(words) + 1):
        if i == len(words) or words[i].end_s - words[first].start_s > max_seconds - 2 * margin_s:
            groups.append((first, i))
            first = i
    return groups


def window(words: list[Word], first: int, last: int, margin_s: float) -> tuple[float, float]:
    """The trim window of words[first:last]: margin_s of silence on either side, at most half-way to a neighbour."""
    start, end = words[first].start_s, words[last - 1].end_s
    before = words[first - 1].end_s if first > 0 else 0.0
    after = words[last].start_s if last < len(words) else None
    lo = max(before + (start - before) / 2 if first > 0 else 0.0, start - margin_s)
    hi = end + margin_s if after is None else min(end + (after - end) / 2, end + margin_s)
    return round(max(lo, 0.0), 3), round(hi, 3)


def split_clip(clip: Clip, max_seconds: float = DEFAULT_MAX_SECONDS, margin_s: float = MARGIN_S) -> list[Clip]:
    """A clip with timed words -> itself when its words end within max_seconds of its start, else its pieces."""
    words = list(clip.words or ())
    if not words:
        return [clip]
    start = clip.start_s or 0.0
    if words[-1].end_s - start <= max_seconds:
        return [dataclasses.replace(clip, speech_start_s=words[0].start_s, speech_end_s=words[-1].end_s)]
    pieces = []
    for first, last in group_words(words, max_seconds, margin_s):
        lo, hi = window(words, first, last, margin_s)
        part = tuple(words[first:last])
        pieces.append(dataclasses.replace(
            clip, clip_id=f"{clip.clip_id}_{round(lo * 100):06d}_{round(hi * 100):06d}", parent_id=clip.clip_id,
            transcript=" ".join(w.word for w in part), words=part, start_s=lo, end_s=hi,
            speech_start_s=part[0].start_s, speech_end_s=part[-1].end_s))
    return pieces


def words_or_none(words: list[Word]) -> Optional[tuple[Word, ...]]:
    return tuple(words) if words else None
