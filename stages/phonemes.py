"""Transcript -> normalised text -> phones -> token ids, with phonemizer's espeak-ng backend (and CMUdict).

Outputs on speech rows: `phonemes` (text: the phone tokens separated by spaces, `|` between words, punctuation
kept as pause marks; for `ipa-char`, IPA with spaces between words) and `phone_ids` (int16 `[N]`, ids of the
phone set's vocabulary in `stages.phone_vocab`, no padding). Rows of other tasks get None for both.

Phone sets (`PHONE_SETS`): `espeak-phone` (default; one token per espeak-ng phone, stress carried on the vowel),
`arpabet` (the reference's ARPAbet with stress: CMUdict, espeak-ng for the words it lacks, `stages.arpabet`) and
`ipa-char` (one token per IPA character: outputs made before the phone-level sets). The text is normalised first
(`stages.text_norm`: all-caps folding, numbers, currency, abbreviations), so "US" and "us" give the same ids.
A word-boundary token between words is optional (`word_boundary`); punctuation marks are pause tokens.

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
from stages import arpabet
from stages import text_norm as text_norm_module
from stages.base import Reject, Row, Stage
from stages.phone_vocab import (
    ARPABET_VERSION,
    ESPEAK_PHONE_SYMBOLS,
    ESPEAK_PHONE_VERSION,
    ESPEAK_PHONES,
    PHONE_LETTERS,
    PHONE_WORD_BOUNDARY,
    PUNCTUATION,
    VOCAB_VERSION,
    VOCABS,
    PhoneVocab,
    UnknownSymbol,
    segment_phone,
)

ESPEAK_SOURCES = ("auto", "system", "bundled")
PHONE_SETS = {"espeak-phone": ESPEAK_PHONE_VERSION, "arpabet": ARPABET_VERSION, "ipa-char": VOCAB_VERSION}
PHONE_SEPARATOR = "_"  # between the phones of a word in phonemizer's output (phone-level sets)
ESPEAK_PHONE_TOKENS = frozenset(ESPEAK_PHONE_SYMBOLS)

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
    phone_set: str = "espeak-phone"  # espeak-phone | arpabet | ipa-char (PHONE_SETS)
    text_norm: Optional[str] = "en-v1"  # stages.text_norm; None leaves the text as written
    word_boundary: bool = False     # a `|` token between words (phone-level sets)


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
    """Normalise speech rows' transcripts, phonemize them in one espeak-ng call per batch, encode them as ids."""

    name = "phonemes"

    def __init__(self, *, language: str = "en-us", with_stress: bool = True, max_chars: int = 1000,
                 espeak: str = "auto", phone_set: str = "espeak-phone", text_norm: Optional[str] = "en-v1",
                 word_boundary: bool = False):
        super().__init__()
        if espeak not in ESPEAK_SOURCES:
            raise ValueError(f"espeak must be one of {ESPEAK_SOURCES}, got {espeak!r}")
        if max_chars < 1:
            raise ValueError("max_chars must be positive")
        if phone_set not in PHONE_SETS:
            raise ValueError(f"phone_set must be one of {tuple(PHONE_SETS)}, got {phone_set!r}")
        if phone_set == "arpabet" and not with_stress:
            raise ValueError("the arpabet phone set carries stress: with_stress must be true")
        if phone_set == "ipa-char" and word_boundary:
            raise ValueError("ipa-char always has word boundaries (spaces); word_boundary is for phone-level sets")
        if text_norm is not None and text_norm not in text_norm_module.TEXT_NORMS:
            raise ValueError(f"text_norm must be one of {text_norm_module.TEXT_NORMS} or None, got {text_norm!r}")
        self.language = language
        self.with_stress = with_stress
        self.max_chars = max_chars
        self.espeak = espeak
        self.phone_set = phone_set
        self.text_norm = text_norm
        self.word_boundary = word_boundary
        self.vocab: PhoneVocab = VOCABS[PHONE_SETS[phone_set]]
        self._backend = None
        self._espeak_info: Optional[dict[str, Any]] = None

    @classmethod
    def from_contract(cls, phones: dict[str, Any], **kw: Any) -> "PhonemeStage":
        """The stage that made a contract's phonemes (`vocab_dict()`); contracts written before phone sets and text
        normalisation existed are ipa-char without normalisation."""
        version = phones["vocab"]["version"]
        phone_set = phones.get("phone_set") or next((k for k, v in PHONE_SETS.items() if v == version), None)
        if phone_set is None:
            raise ValueError(f"unknown phoneme vocabulary {version!r}; this install knows {sorted(VOCABS)}")
        norm = phones.get("text_norm", {"version": None})["version"]
        return cls(language=phones["language"], with_stress=phones["with_stress"],
                   max_chars=phones.get("max_chars", 1000), phone_set=phone_set, text_norm=norm,
                   word_boundary=bool(phones.get("word_boundary_token", False)), **kw)

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
        phone = "" if self.phone_set == "ipa-char" else PHONE_SEPARATOR
        self._separator = Separator(phone=phone, syllable="", word=" ")

    def _ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    def vocab_dict(self) -> dict[str, Any]:
        """What dataset.json records about phonemes: the vocabulary and everything that shaped the ids."""
        import phonemizer

        self._ensure_setup()
        out = {"vocab": self.vocab.to_dict(), "backend": "espeak-ng", "language": self.language,
               "with_stress": self.with_stress, "punctuation": PUNCTUATION, "word_separator": " ",
               "language_switch": "remove-flags", "max_chars": self.max_chars,
               "espeak_version": self._espeak_info["version"], "espeak_library": self._espeak_info["source"],
               "phonemizer_version": phonemizer.__version__}
        if self.phone_set == "ipa-char" and self.text_norm is None:
            return out  # exactly what contracts recorded before phone sets existed, so old outputs still match
        out.update(phone_set=self.phone_set, text_norm=text_norm_module.describe(self.text_norm),
                   word_boundary_token=self.word_boundary,
                   stress="on the vowel token" if self.phone_set == "espeak-phone" else "CMUdict digits")
        if self.phone_set == "arpabet":
            out["cmudict_version"] = arpabet.cmudict_version()
        return out

    def phonemize_chunks(self, chunks: list[str]) -> list[str]:
        """One backend call: one line per input chunk (chunks hold no line breaks, no punctuation marks)."""
        if not chunks:
            return []
        lines = self._backend.phonemize(chunks, separator=self._separator, strip=True)
        if len(lines) != len(chunks):
            raise RuntimeError(f"phonemizer returned {len(lines)} lines for {len(chunks)} inputs")
        return lines

    def _espeak_inputs(self, parts: list[str]) -> list[str]:
        """What espeak must phonemize for one transcript: its text chunks, or (arpabet) the words CMUdict lacks."""
        chunks = [c for c in parts[0::2] if c]
        if self.phone_set != "arpabet":
            return chunks
        return [w for c in chunks for w in c.split(" ") if _cmudict_word(w) is None]

    def process_batch(self, rows: list[Row]) -> None:
        prepared: list[tuple[Row, list[str]]] = []
        for row in rows:
            row["phonemes"] = None
            row["phone_ids"] = None
            self.guarded(row, self._prepare, row, prepared)
        inputs = [x for _, parts in prepared for x in self._espeak_inputs(parts)]
        try:
            lines = iter(self.phonemize_chunks(inputs))
        except Exception:  # noqa: BLE001 - the batch failed as a whole: redo it row by row to find the culprit
            for row, parts in prepared:
                self.guarded(row, self._finish_alone, row, parts)
            return
        for row, parts in prepared:
            espeak_out = {x: next(lines) for x in self._espeak_inputs(parts)}
            self.guarded(row, self._finish, row, parts, espeak_out)

    def _prepare(self, row: Row, prepared: list) -> None:
        task = row.get("task")
        if task not in TASKS:
            raise Reject("unknown_task", f"task {task!r} is not one of {TASKS}")
        if task not in SPEECH_TASKS:
            return
        if row.get("transcript_problem"):
            raise Reject("unreadable_transcript", str(row["transcript_problem"]))
        transcript = row.get("transcript")
        if transcript is not None and not isinstance(transcript, str):
            raise Reject("empty_transcript", f"transcript is a {type(transcript).__name__}, not text")
        text = clean_text(transcript or "")
        if not text:
            raise Reject("empty_transcript", "no transcript" if transcript is None else "blank transcript")
        if len(text) > self.max_chars:
            raise Reject("transcript_too_long", f"{len(text)} characters > max_chars {self.max_chars}")
        prepared.append((row, split_marks(text_norm_module.normalize_text(text, self.text_norm))))

    def _finish_alone(self, row: Row, parts: list[str]) -> None:
        inputs = self._espeak_inputs(parts)
        try:
            lines = self.phonemize_chunks(inputs)
        except Exception as e:  # noqa: BLE001 - espeak failed on this row only: a reject with its error
            raise Reject("phonemizer_error", f"{type(e).__name__}: {e}") from e
        self._finish(row, parts, dict(zip(inputs, lines)))

    def _finish(self, row: Row, parts: list[str], espeak_out: dict[str, str]) -> None:
        if self.phone_set == "ipa-char":
            text = join_marks(parts, [espeak_out[c] if c else "" for c in parts[0::2]])
            tokens, has_phones = text, any(ch in PHONE_LETTERS for ch in text)
        else:
            sequence = self._phone_sequence(parts, espeak_out)
            text = " ".join(sequence)
            tokens = [t for t in sequence if t != PHONE_WORD_BOUNDARY or self.word_boundary]
            has_phones = any(t != PHONE_WORD_BOUNDARY and t not in PUNCTUATION for t in sequence)
        try:
            ids = self.vocab.encode(tokens)
        except UnknownSymbol as e:
            raise Reject("unknown_symbol", f"{e} in {text!r}") from e
        if not has_phones:
            raise Reject("no_phonemes", f"transcript {row.get('transcript')!r} gave no phones ({text!r})")
        row["phonemes"] = text
        row["phone_ids"] = ids  # [N] int16

    def _phone_sequence(self, parts: list[str], espeak_out: dict[str, str]) -> list[str]:
        """Phone tokens of a transcript, `|` between the words of a chunk, each punctuation mark a token."""
        sequence: list[str] = []
        for i, part in enumerate(parts):
            if i % 2:
                sequence.extend(ch for ch in part if not ch.isspace())
                continue
            if not part:
                continue
            if self.phone_set == "arpabet":
                words = [_cmudict_word(w) or arpabet.espeak_word_to_arpabet(_espeak_phones(espeak_out[w]))
                         for w in part.split(" ")]
            else:
                words = [_espeak_phones(w) for w in espeak_out[part].split(" ")]
            for k, phones in enumerate(w for w in words if w):
                if k:
                    sequence.append(PHONE_WORD_BOUNDARY)
                sequence.extend(p for p in phones if p)
        return sequence


def _espeak_phones(line: str) -> list[str]:
    """espeak's phones of a line (one word may come back as several: 'e.g' -> 'iː dʒˈiː'); a token of several
    phones run together is split (`segment_phone`)."""
    return [q for word in line.split(" ") for p in word.split(PHONE_SEPARATOR) if p
            for q in (segment_phone(p, ESPEAK_PHONES) if p not in ESPEAK_PHONE_TOKENS else [p])]


def _cmudict_word(word: str) -> Optional[list[str]]:
    """CMUdict's ARPAbet for a word, a hyphenated word looked up part by part; None when any part is missing."""
    phones: list[str] = []
    for part in (p for p in word.split("-") if p):
        found = arpabet.lookup(part)
        if found is None:
            return None
        phones.extend(found)
    return phones or None
