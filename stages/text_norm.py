"""Text normalisation before phonemes: what a transcript says, written as the words a speaker says.

Why here and not left to espeak-ng: espeak reads an upper-case word it takes for an acronym letter by letter
("US" -> /juːˈɛs/, "IT" -> /aɪˈtiː/), and all-caps corpora (LRS2, LRS3, GRID) are written that way; and the
ARPAbet phone set looks words up in CMUdict, which holds no digits or symbols.

`en-v1`, in order (each step is named in the feature contract, `describe()`):

  case_fold       a transcript with no lower-case letter (and at least two cased ones) is lower-cased whole:
                  all-caps text says nothing about acronyms. Mixed-case text is left alone ("the US economy").
  abbreviations   Mr. Mrs. Ms. Dr. Prof. St. Jr. Sr. vs. etc. e.g. i.e. No. (before a number) & -> words
  currency        $5 -> five dollars, $12.50 -> twelve dollars fifty cents, £3 -> three pounds, €1 -> one euro
  percent         7% -> seven percent
  time            10:30 -> ten thirty, 8:00 -> eight o'clock, 9:05 -> nine oh five
  ordinals        21st -> twenty-first
  numbers         20,000 -> twenty thousand; 4.6 -> four point six; 1100-1999 alone -> a year (eighteen
                  sixty-nine); other integers as cardinals (num2words, British "and", no commas)

Spelled-out numbers use hyphens ("twenty-first"); a hyphen is not a punctuation mark here, so it gives no pause.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Optional

TEXT_NORMS = ("en-v1",)

_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents")}
_CURRENCY_RE = re.compile(r"([$£€])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{2}))?(?!\d)")
_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s?%")
_TIME_RE = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_NUMBER_RE = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\w]|\.\d)")
_ABBREVIATIONS = (
    (re.compile(r"\bmrs\.", re.IGNORECASE), "missus"), (re.compile(r"\bmr\.", re.IGNORECASE), "mister"),
    (re.compile(r"\bms\.", re.IGNORECASE), "miss"), (re.compile(r"\bdr\.", re.IGNORECASE), "doctor"),
    (re.compile(r"\bprof\.", re.IGNORECASE), "professor"), (re.compile(r"\bjr\.", re.IGNORECASE), "junior"),
    (re.compile(r"\bsr\.", re.IGNORECASE), "senior"), (re.compile(r"\bvs\.", re.IGNORECASE), "versus"),
    (re.compile(r"\betc\.", re.IGNORECASE), "et cetera"), (re.compile(r"\be\.g\.?", re.IGNORECASE), "for example"),
    (re.compile(r"\bi\.e\.?", re.IGNORECASE), "that is"),
    (re.compile(r"\bno\.(?=\s*\d)", re.IGNORECASE), "number"),
    (re.compile(r"\bst\.(?=\s+[A-Za-z])", re.IGNORECASE), "saint"), (re.compile(r"\bst\.", re.IGNORECASE), "street"),
    (re.compile(r"\s*&\s*"), " and "),
)


def _words(n: int, to: str = "cardinal") -> str:
    from num2words import num2words

    return num2words(n, lang="en", to=to).replace(",", "")  # "one thousand, five hundred": no pause is spoken


def case_fold(text: str) -> str:
    cased = [ch for ch in text if ch.isupper() or ch.islower()]
    if len(cased) >= 2 and not any(ch.islower() for ch in cased):
        return text.lower()
    return text


def _currency(m: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCY[m.group(1)]
    whole = int(m.group(2).replace(",", ""))
    out = f"{_words(whole)} {one if whole == 1 else many}"
    if m.group(3) and int(m.group(3)):
        cents = int(m.group(3))
        out += f" {_words(cents)} {sub_one if cents == 1 else sub_many}"
    return out


def _time(m: re.Match) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes == 0:
        return f"{_words(hours)} o'clock"
    return f"{_words(hours)} {'oh ' if minutes < 10 else ''}{_words(minutes)}"


def _number(m: re.Match) -> str:
    whole_text, fraction = m.group(1), m.group(2)
    whole = int(whole_text.replace(",", ""))
    if fraction is not None:
        return f"{_words(whole)} point {' '.join(_words(int(d)) for d in fraction)}"
    if "," not in whole_text and 1100 <= whole <= 1999:
        return _words(whole, "year")
    return _words(whole)


def _abbreviations(text: str) -> str:
    for pattern, words in _ABBREVIATIONS:
        text = pattern.sub(words, text)
    return text


STEPS: dict[str, Callable[[str], str]] = {
    "case_fold": case_fold,
    "abbreviations": _abbreviations,
    "currency": lambda t: _CURRENCY_RE.sub(_currency, t),
    "percent": lambda t: _PERCENT_RE.sub(lambda m: f"{m.group(1)} percent", t),
    "time": lambda t: _TIME_RE.sub(_time, t),
    "ordinals": lambda t: _ORDINAL_RE.sub(lambda m: _words(int(m.group(1)), "ordinal"), t),
    "numbers": lambda t: _NUMBER_RE.sub(_number, t),
}


def normalize_text(text: str, norm: Optional[str] = "en-v1") -> str:
    """Cleaned text -> the words spoken (see the module docstring); norm None returns text unchanged."""
    if norm is None:
        return text
    if norm not in TEXT_NORMS:
        raise ValueError(f"text normalisation must be one of {TEXT_NORMS} or None, got {norm!r}")
    for step in STEPS.values():
        text = step(text)
    return re.sub(r"\s+", " ", text).strip()


def describe(norm: Optional[str]) -> dict[str, Any]:
    """What dataset.json records about the normalisation (its version and steps, and num2words's version)."""
    if norm is None:
        return {"version": None}
    import num2words

    return {"version": norm, "steps": list(STEPS), "num2words_version": getattr(num2words, "__version__", "unknown")}
