"""Transcript -> IPA phonemes -> token ids, with phonemizer's espeak-ng backend.

Outputs on speech rows: `phonemes` (IPA text: words split by spaces, punctuation kept as pause marks,
stress marks on) and `phone_ids` (int16 `[N]`, ids of `stages.phone_vocab`, no padding). Rows of other
tasks get None for both.

Punctuation is split off here, not by phonemizer's `preserve_punctuation`: phonemizer 3.4 cuts a line at
the first occurrence of a mark's text rather than where the mark matched, so a line such as
"version 4.6." comes back as two lines and every later line of the batch gets its neighbour's phonemes.
Here each transcript is cut into text chunks and mark runs; all chunks of a batch go to ONE backend call
with no punctuation handling (one output line per input line, checked), and the marks are put back
between the chunks' phonemes. Marks inside a token stay with espeak, which reads them: "4.6" (four point
six), "20,000", "10:30", "e.g", "example.com".
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from dataclasses import dataclass
from typing import Any, Optional

from manifests.tasks import SPEECH_TASKS, TASKS
from stages.base import Reject, Row, Stage
from stages.phone_vocab import PHONE_LETTERS, PUNCTUATION, PhoneVocab, UnknownSymbol, default_vocab

ESPEAK_SOURCES = ("auto", "system", "bundled")

_MARK = (r"(?:(?!(?<=\w)\.(?=\w))"      # a full stop inside a token (4.6, e.g, example.com) is not a mark
         r"(?!(?<=\d)[,:](?=\d))"      # nor a comma or colon between digits (20,000  10:30)
         f"[{re.escape(PUNCTUATION)}])")
_MARK_RUN = re.compile(rf"((?:\s*{_MARK})+\s*)")
_SPACES = re.compile(r"\s+")

_espeak_lock = threading.Lock()
_espeak_info: Optional[dict[str, Any]] = None


@dataclass(frozen=True, kw_only=True)
class PhonemeConfig:
    language: str = "en-us"
    with_stress: bool = True
    max_chars: int = 1000
    espeak: str = "auto"            # auto | system | bundled (the espeakng-loader wheel: one release everywhere)


def configure_espeak(source: str = "auto") -> dict[str, Any]:
    """Point phonemizer at an espeak-ng library, once per process; returns what was chosen.

    source: "system" uses phonemizer's own discovery (PHONEMIZER_ESPEAK_LIBRARY, else the system
    library); "bundled" uses the library and data of the `espeakng_loader` wheel (no root needed, same
    espeak-ng release on every machine); "auto" is "system" where it loads, else "bundled".
    The choice is process-wide (phonemizer keeps it on a class); backends made earlier keep theirs.
    """
    global _espeak_info
    if source not in ESPEAK_SOURCES:
        raise ValueError(f"espeak source must be one of {ESPEAK_SOURCES}, got {source!r}")
    with _espeak_lock:
        if _espeak_info is not None and _espeak_info["requested"] == source:
            return dict(_espeak_info)
        from phonemizer.backend.espeak.wrapper import EspeakWrapper

        wrapper, chosen, errors = None, None, []
        for candidate in (("system", "bundled") if source == "auto" else (source,)):
            if candidate == "system":
                EspeakWrapper.set_library(None)
                EspeakWrapper.set_data_path(None)
            else:
                import espeakng_loader

                EspeakWrapper.set_library(espeakng_loader.get_library_path())
                EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
            try:
                wrapper, chosen = EspeakWrapper(), candidate
                break
            except (RuntimeError, OSError) as e:
                errors.append(f"{candidate}: {e}")
        if wrapper is None:
            raise RuntimeError("no usable espeak-ng library (" + "; ".join(errors) + "). Install espeak-ng "
                               "(apt-get install espeak-ng) or the espeakng-loader wheel.")
        _espeak_info = {"requested": source, "source": chosen, "library": str(wrapper.library_path),
                        "data_path": str(wrapper.data_path), "version": ".".join(map(str, wrapper.version))}
        return dict(_espeak_info)


def clean_text(text: str) -> str:
    """Unicode NFC; line breaks, tabs and other control characters -> spaces; invisible format characters
    (soft hyphen, zero-width joiners, BOM, direction marks) removed; whitespace collapsed and stripped.
    phonemizer and espeak treat line breaks as utterance boundaries, so none may survive."""
    text = unicodedata.normalize("NFC", text)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat == "Cf":
            continue
        out.append(" " if cat in ("Cc", "Zl", "Zp") else ch)
    return _SPACES.sub(" ", "".join(out)).strip()


def _is_pictograph(ch: str) -> bool:
    """Emoji, dingbats, music notes and other pictographic symbols (and the variation selectors that style
    them): not speech. espeak would read their Unicode names aloud ("grinning face"), words nobody said.
    Symbols below U+2190 (© ° ™, currency, maths) stay: espeak reads them as the words speakers use."""
    if 0xFE00 <= ord(ch) <= 0xFE0F:
        return True
    return ord(ch) >= 0x2190 and unicodedata.category(ch) in ("So", "Sk")


def split_marks(text: str) -> list[str]:
    """Cleaned text -> [chunk, marks, chunk, marks, ..., chunk]: even items are text for espeak (pictographs
    removed, possibly empty), odd items are runs of punctuation marks with their surrounding spaces."""
    parts = _MARK_RUN.split(text)
    for i in range(0, len(parts), 2):
        parts[i] = _SPACES.sub(" ", "".join(" " if _is_pictograph(ch) else ch for ch in parts[i])).strip()
    return parts


def join_marks(parts: list[str], phonemized_chunks: list[str]) -> str:
    """Inverse of split_marks: chunk phonemes and mark runs in their order, with the text's own spacing
    around the marks; whitespace collapsed to single spaces (the word boundary)."""
    pieces = list(parts)
    pieces[0::2] = phonemized_chunks
    return _SPACES.sub(" ", "".join(pieces)).strip()


class PhonemeStage(Stage):
    """Phonemize speech rows' transcripts in one espeak-ng call per batch and encode them as token ids."""

    name = "phonemes"

    def __init__(self, *, language: str = "en-us", with_stress: bool = True, max_chars: int = 1000,
                 espeak: str = "auto"):
        super().__init__()
        if espeak not in ESPEAK_SOURCES:
            raise ValueError(f"espeak must be one of {ESPEAK_SOURCES}, got {espeak!r}")
        if max_chars < 1:
            raise ValueError("max_chars must be positive")
        self.language = language
        self.with_stress = with_stress
        self.max_chars = max_chars
        self.espeak = espeak
        self.vocab: PhoneVocab = default_vocab()
        self._backend = None
        self._espeak_info: Optional[dict[str, Any]] = None

    def setup(self) -> None:
        from phonemizer.backend import EspeakBackend
        from phonemizer.separator import Separator

        self._espeak_info = configure_espeak(self.espeak)
        # phonemizer warns on every batch about word-count mismatches and removed language-switch flags,
        # both expected with these options: only its errors are worth a log line
        log = logging.getLogger(f"{__name__}.phonemizer")
        log.setLevel(logging.ERROR)
        self._backend = EspeakBackend(
            self.language, preserve_punctuation=False, with_stress=self.with_stress,
            punctuation_marks=re.compile(r"(?!)"),  # punctuation is handled here (module docstring)
            language_switch="remove-flags", words_mismatch="ignore", logger=log)
        self._separator = Separator(phone="", syllable="", word=" ")

    def _ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    def vocab_dict(self) -> dict[str, Any]:
        """What dataset.json records about phonemes: the vocabulary and everything that shaped the ids."""
        import phonemizer

        self._ensure_setup()
        return {"vocab": self.vocab.to_dict(), "backend": "espeak-ng", "language": self.language,
                "with_stress": self.with_stress, "punctuation": PUNCTUATION, "word_separator": " ",
                "language_switch": "remove-flags", "max_chars": self.max_chars,
                "espeak_version": self._espeak_info["version"], "espeak_library": self._espeak_info["source"],
                "phonemizer_version": phonemizer.__version__}

    def phonemize_chunks(self, chunks: list[str]) -> list[str]:
        """One backend call: one IPA line per input chunk (chunks hold no line breaks, no punctuation marks)."""
        if not chunks:
            return []
        lines = self._backend.phonemize(chunks, separator=self._separator, strip=True)
        if len(lines) != len(chunks):
            raise RuntimeError(f"phonemizer returned {len(lines)} lines for {len(chunks)} inputs")
        return lines

    def process_batch(self, rows: list[Row]) -> None:
        prepared: list[tuple[Row, list[str]]] = []
        for row in rows:
            row["phonemes"] = None
            row["phone_ids"] = None
            self.guarded(row, self._prepare, row, prepared)
        chunks = [c for _, parts in prepared for c in parts[0::2] if c]
        try:
            lines = iter(self.phonemize_chunks(chunks))
        except Exception:  # noqa: BLE001 - the batch failed as a whole: redo it row by row to find the culprit
            for row, parts in prepared:
                self.guarded(row, self._finish_alone, row, parts)
            return
        for row, parts in prepared:
            phonemized = [next(lines) if c else "" for c in parts[0::2]]
            self.guarded(row, self._finish, row, parts, phonemized)

    def _prepare(self, row: Row, prepared: list) -> None:
        task = row.get("task")
        if task not in TASKS:
            raise Reject("unknown_task", f"task {task!r} is not one of {TASKS}")
        if task not in SPEECH_TASKS:
            return
        transcript = row.get("transcript")
        if transcript is not None and not isinstance(transcript, str):
            raise Reject("empty_transcript", f"transcript is a {type(transcript).__name__}, not text")
        text = clean_text(transcript or "")
        if not text:
            raise Reject("empty_transcript", "no transcript" if transcript is None else "blank transcript")
        if len(text) > self.max_chars:
            raise Reject("transcript_too_long", f"{len(text)} characters > max_chars {self.max_chars}")
        prepared.append((row, split_marks(text)))

    def _finish_alone(self, row: Row, parts: list[str]) -> None:
        chunks = [c for c in parts[0::2] if c]
        try:
            lines = iter(self.phonemize_chunks(chunks))
        except Exception as e:  # noqa: BLE001 - espeak failed on this row only: a reject with its error
            raise Reject("phonemizer_error", f"{type(e).__name__}: {e}") from e
        self._finish(row, parts, [next(lines) if c else "" for c in parts[0::2]])

    def _finish(self, row: Row, parts: list[str], phonemized: list[str]) -> None:
        ipa = join_marks(parts, phonemized)
        try:
            ids = self.vocab.encode(ipa)
        except UnknownSymbol as e:
            raise Reject("unknown_symbol", f"{e} in {ipa!r}") from e
        if not any(ch in PHONE_LETTERS for ch in ipa):
            raise Reject("no_phonemes", f"transcript {row.get('transcript')!r} gave no phones ({ipa!r})")
        row["phonemes"] = ipa
        row["phone_ids"] = ids  # [N] int16
