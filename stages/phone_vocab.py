"""The phoneme vocabularies: fixed, versioned tables from phone tokens to ids. Never reorder or edit a released
version: add a new one. Three are known (`VOCABS`, by version); `stages.phonemes` says which phone set uses which.

`espeak-phone-v1` (phone set `espeak-phone`, the default): one token per espeak-ng phone. Stress is carried on the
vowel: `ˈæ`, `ˌæ` and `æ` are three tokens, so a stress mark never takes a slot of its own; length is part of the
phone (espeak's `ɑː` and `ɑ` are different phones) and so are diacritics (`n̩`, `nʲ`). The inventory is what
espeak-ng en-us produces for every word of CMUdict (its output on 127k words, stress stripped), plus a few vowels
other English voices use; anything else is refused with `UnknownSymbol`, never dropped.

`arpabet-v1` (phone set `arpabet`): the reference implementation's units, ARPAbet with lexical stress as CMUdict
writes it: id 0 then the 69 phones (15 vowels x stress 0/1/2, 24 consonants) in CMUdict's order, so ids 0..69 are
the reference's 70.

`ipa-v1` (phone set `ipa-char`, outputs made before the phone-level sets): one token per IPA character, so stress
marks, length marks and word spaces each take a token. Kept so that those outputs and checkpoints keep working.

In the two phone-level sets, after the phones come the word-boundary token `|` (emitted only when the stage is
asked for word boundaries) and the punctuation marks kept as pause tokens, one token per mark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

PAD = "<pad>"
PAD_ID = 0
PUNCTUATION = ';:,.!?¡¿—…"«»“”(){}[]'

# ---------------------------------------------------------------------------------------------- ipa-v1 (characters)

VOCAB_VERSION = "ipa-v1"
WORD_BOUNDARY = " "  # ipa-v1's word boundary: the space between words
PROSODY = "ˈˌːˑ"  # primary and secondary stress, long, half-long
# syllabic, nasalised, rhotic hook, aspirated/breathy, palatalised, labialised, velarised, pharyngealised, ejective
DIACRITICS = "\u0329\u0303˞ʰʱʲʷˠˤʼʴ"
ASCII_LETTERS = "abcdefghijklmnopqrstuvwxyz"
IPA_LETTERS = (
    "ɑɐɒæɓʙβɔɕçɗɖðʤəɘɚɛɜɝɞɟʄɡɠɢʛɦɧħɥʜɨɪʝɭɬɫɮʟɱɯɰŋɳɲɴøɵɸθœɶʘɹɺɾɻʀʁɽʂʃʈʧʉʊʋⱱʌɣɤʍχʎʏʑʐʒʔʡʕʢǀǁǂǃᵻ"
)
PHONE_LETTERS = frozenset(ASCII_LETTERS + IPA_LETTERS)
SYMBOLS: tuple[str, ...] = (PAD, WORD_BOUNDARY, *PUNCTUATION, *PROSODY, *DIACRITICS, *ASCII_LETTERS, *IPA_LETTERS)

# ---------------------------------------------------------------------------------------------- espeak-phone-v1

ESPEAK_PHONE_VERSION = "espeak-phone-v1"
PHONE_WORD_BOUNDARY = "|"
STRESS_MARKS = ("ˈ", "ˌ")  # primary, secondary: written before the vowel they stress
ESPEAK_CONSONANTS = ("p", "b", "t", "d", "k", "ɡ", "f", "v", "θ", "ð", "s", "z", "ʃ", "ʒ", "h", "m", "n", "ŋ", "l",
                     "ɹ", "j", "w", "tʃ", "dʒ", "ɾ", "ʔ", "x", "r", "ɬ", "ç", "nʲ", "ɡʲ")
# vowels, r-coloured vowels and syllabic consonants: the phones that can carry stress
ESPEAK_VOWELS = ("ə", "ɪ", "ɚ", "æ", "ɛ", "i", "iː", "ɑː", "eɪ", "ᵻ", "oʊ", "ʌ", "əl", "uː", "aɪ", "ɐ", "ɜː", "ɑːɹ",
                 "ɔː", "aʊ", "iə", "oːɹ", "ɔːɹ", "ɔ", "ʊ", "ɔɪ", "ɛɹ", "ʊɹ", "ɪɹ", "oː", "aɪɚ", "aɪə", "n̩", "ɑ̃",
                 "ɔ̃", "o", "ɑ", "ɒ", "a", "e", "u", "ɜ", "eə", "əʊ", "ʊə")
ESPEAK_PHONE_SYMBOLS: tuple[str, ...] = (
    PAD, *ESPEAK_CONSONANTS, *(s + v for v in ESPEAK_VOWELS for s in ("", *STRESS_MARKS)),
    PHONE_WORD_BOUNDARY, *PUNCTUATION)

# ---------------------------------------------------------------------------------------------- arpabet-v1

ARPABET_VERSION = "arpabet-v1"
ARPABET_VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
ARPABET_CONSONANTS = ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH", "T",
                      "TH", "V", "W", "Y", "Z", "ZH")
ARPABET_PHONES: tuple[str, ...] = tuple(sorted((*(v + s for v in ARPABET_VOWELS for s in "012"), *ARPABET_CONSONANTS)))
ARPABET_SYMBOLS: tuple[str, ...] = (PAD, *ARPABET_PHONES, PHONE_WORD_BOUNDARY, *PUNCTUATION)


def segment_phone(token: str, phones: frozenset[str] | set[str]) -> list[str]:
    """An espeak token that is several phones run together ("ææ" when a spelled-out "aaaa" repeats a vowel) ->
    those phones, longest match first, its stress mark kept on the first; [token] when it cannot be split."""
    stress = token[0] if token[:1] in STRESS_MARKS else ""
    rest, pieces = token[len(stress):], []
    while rest:
        match = next((rest[:n] for n in range(len(rest), 0, -1) if rest[:n] in phones), None)
        if match is None:
            return [token]
        pieces.append(match)
        rest = rest[len(match):]
    return [stress + pieces[0], *pieces[1:]] if pieces else [token]


ESPEAK_PHONES = frozenset((*ESPEAK_CONSONANTS, *ESPEAK_VOWELS))


class UnknownSymbol(KeyError):
    """Phonemes hold tokens the vocabulary does not have; `symbols` lists them (sorted, unique)."""

    def __init__(self, symbols: Iterable[str]):
        self.symbols = tuple(sorted(set(symbols)))
        super().__init__(self.symbols)

    def __str__(self) -> str:
        return " ".join(f"{s!r}({' '.join(f'U+{ord(c):04X}' for c in s)})" for s in self.symbols)


@dataclass(frozen=True)
class PhoneVocab:
    """An ordered token table; id i is `symbols[i]`, id 0 is padding. tokenisation "character" encodes a string
    one character per token; "phone" encodes a sequence of phone tokens."""

    version: str
    symbols: tuple[str, ...]
    tokenisation: str = "character"
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        symbols = tuple(self.symbols)
        if not symbols or symbols[0] != PAD:
            raise ValueError(f"symbol 0 must be {PAD!r}")
        if len(set(symbols)) != len(symbols):
            raise ValueError("vocabulary symbols must be unique")
        if self.tokenisation not in ("character", "phone"):
            raise ValueError(f"tokenisation must be 'character' or 'phone', not {self.tokenisation!r}")
        if self.tokenisation == "character" and any(len(s) != 1 for s in symbols[1:]):
            raise ValueError("every symbol but the padding must be one character")
        if len(symbols) > np.iinfo(np.int16).max:
            raise ValueError("too many symbols for int16 ids")
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "_index", {s: i for i, s in enumerate(symbols) if i != PAD_ID})

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    @property
    def pad_id(self) -> int:
        return PAD_ID

    def encode(self, tokens: str | Sequence[str]) -> np.ndarray:
        """Tokens -> int16 ids `[N]` (a string is its characters); never contains the padding id."""
        unknown = set(tokens) - self._index.keys()
        if unknown:
            raise UnknownSymbol(unknown)
        return np.fromiter((self._index[t] for t in tokens), dtype=np.int16, count=len(tokens))

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """Ids -> tokens; padding ids are skipped, an id outside the table raises ValueError."""
        out = []
        for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist():
            if not 0 <= i < len(self.symbols):
                raise ValueError(f"phone id {i} is outside the vocabulary (size {len(self.symbols)})")
            if i != PAD_ID:
                out.append(self.symbols[i])
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text: characters joined (ipa-v1), phone tokens separated by spaces (phone-level sets)."""
        return ("" if self.tokenisation == "character" else " ").join(self.tokens(ids))

    def to_dict(self) -> dict[str, Any]:
        boundary = WORD_BOUNDARY if self.tokenisation == "character" else PHONE_WORD_BOUNDARY
        return {"version": self.version, "symbols": list(self.symbols), "pad_id": PAD_ID,
                "word_boundary": boundary, "tokenisation": self.tokenisation}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PhoneVocab":
        vocab = cls(version=str(data["version"]), symbols=tuple(data["symbols"]),
                    tokenisation=str(data.get("tokenisation", "character")))
        known = VOCABS.get(vocab.version)
        if known is not None and vocab != known:
            raise ValueError(f"vocabulary claims version {vocab.version} but its symbols differ from it")
        return vocab


VOCABS: dict[str, PhoneVocab] = {
    VOCAB_VERSION: PhoneVocab(VOCAB_VERSION, SYMBOLS, "character"),
    ESPEAK_PHONE_VERSION: PhoneVocab(ESPEAK_PHONE_VERSION, ESPEAK_PHONE_SYMBOLS, "phone"),
    ARPABET_VERSION: PhoneVocab(ARPABET_VERSION, ARPABET_SYMBOLS, "phone"),
}


def default_vocab() -> PhoneVocab:
    """The character-level ipa-v1 table (outputs made before the phone-level sets)."""
    return VOCABS[VOCAB_VERSION]
