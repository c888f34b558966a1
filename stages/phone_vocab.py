"""The phoneme vocabulary: a fixed, versioned table from IPA symbols to token ids.

Tokenisation is per symbol (Unicode character): a multi-character phone such as `oʊ`, `tʃ` or `n̩`
becomes several tokens. Why not one token per phone: espeak-ng's phone inventory differs between
languages and releases and has no stable list, while its output alphabet does. A per-character table is
small (fits `phone_vocab_size=256`), never has to guess where a phone ends, and covers any espeak-ng
output over these symbols; the model learns the digraphs from context. Anything outside the table is
refused with `UnknownSymbol`, never dropped.

Layout of `ipa-v1` (ids are positions in `SYMBOLS`; never reorder or edit a released version: add a
new version instead):

  0            <pad>: padding and "no speech" (the trainer's embedding keeps it at zero)
  1            " "  : word boundary
  2..22        punctuation marks kept as pause tokens, each its own token (the marks phonemizer
               preserves by default, so the model can tell a comma from a full stop or a question)
  23..         prosody (stress, length), diacritics, ASCII letters, IPA letters
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

VOCAB_VERSION = "ipa-v1"
PAD = "<pad>"
PAD_ID = 0
WORD_BOUNDARY = " "
PUNCTUATION = ';:,.!?¡¿—…"«»“”(){}[]'
PROSODY = "ˈˌːˑ"  # primary and secondary stress, long, half-long
# syllabic (n̩), nasalised (ɑ̃ in loanwords), rhotic hook, aspirated/breathy, palatalised, labialised,
# velarised, pharyngealised, ejective
DIACRITICS = "\u0329\u0303˞ʰʱʲʷˠˤʼʴ"
ASCII_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# IPA letters of the VITS-style symbol set, plus ᵻ (espeak's reduced vowel). espeak-ng en-us emits
# a subset: ɐ ɑ æ ð ə ɚ ɛ ɜ ɡ ɪ ɬ ɹ ɾ ʃ ʊ ʌ ʒ ʔ θ ŋ ᵻ (and x, ɔ̃-style loanword vowels); the rest
# keeps other accents' or future releases' output from becoming rejects.
IPA_LETTERS = (
    "ɑɐɒæɓʙβɔɕçɗɖðʤəɘɚɛɜɝɞɟʄɡɠɢʛɦɧħɥʜɨɪʝɭɬɫɮʟɱɯɰŋɳɲɴøɵɸθœɶʘɹɺɾɻʀʁɽʂʃʈʧʉʊʋⱱʌɣɤʍχʎʏʑʐʒʔʡʕʢǀǁǂǃᵻ"
)
PHONE_LETTERS = frozenset(ASCII_LETTERS + IPA_LETTERS)

SYMBOLS: tuple[str, ...] = (PAD, WORD_BOUNDARY, *PUNCTUATION, *PROSODY, *DIACRITICS, *ASCII_LETTERS, *IPA_LETTERS)


class UnknownSymbol(KeyError):
    """IPA text holds characters the vocabulary does not have; `symbols` lists them (sorted, unique)."""

    def __init__(self, symbols: Iterable[str]):
        self.symbols = tuple(sorted(set(symbols)))
        super().__init__(self.symbols)

    def __str__(self) -> str:
        return " ".join(f"{s!r}(U+{ord(s):04X})" for s in self.symbols)


@dataclass(frozen=True)
class PhoneVocab:
    """An ordered symbol table; id i is `symbols[i]`, id 0 is padding."""

    version: str
    symbols: tuple[str, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        symbols = tuple(self.symbols)
        if not symbols or symbols[0] != PAD:
            raise ValueError(f"symbol 0 must be {PAD!r}")
        if len(set(symbols)) != len(symbols):
            raise ValueError("vocabulary symbols must be unique")
        if any(len(s) != 1 for s in symbols[1:]):
            raise ValueError("every symbol but the padding must be one character")
        if len(symbols) > np.iinfo(np.int16).max:
            raise ValueError("too many symbols for int16 ids")
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "_index", {s: i for i, s in enumerate(symbols) if i != PAD_ID})

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def pad_id(self) -> int:
        return PAD_ID

    def encode(self, ipa: str) -> np.ndarray:
        """IPA text -> int16 ids `[len(ipa)]`, one per character; never contains the padding id."""
        unknown = set(ipa) - self._index.keys()
        if unknown:
            raise UnknownSymbol(unknown)
        return np.fromiter((self._index[ch] for ch in ipa), dtype=np.int16, count=len(ipa))

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> IPA text; padding ids are skipped, an id outside the table raises ValueError."""
        out = []
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if not 0 <= i < len(self.symbols):
                raise ValueError(f"phone id {i} is outside the vocabulary (size {len(self.symbols)})")
            if i != PAD_ID:
                out.append(self.symbols[i])
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "symbols": list(self.symbols), "pad_id": PAD_ID,
                "word_boundary": WORD_BOUNDARY, "tokenisation": "character"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PhoneVocab":
        vocab = cls(version=str(data["version"]), symbols=tuple(data["symbols"]))
        if vocab.version == VOCAB_VERSION and vocab.symbols != SYMBOLS:
            raise ValueError(f"vocabulary claims version {VOCAB_VERSION} but its symbols differ from it")
        return vocab


def default_vocab() -> PhoneVocab:
    return PhoneVocab(version=VOCAB_VERSION, symbols=SYMBOLS)
