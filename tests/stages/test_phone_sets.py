"""The phone-level sets (espeak phones, ARPAbet with stress) against the character-level ipa-v1 they replace:
case-independent ids, one token per phone, versioned tables, and contracts that refuse to mix them."""

from __future__ import annotations

import re

import numpy as np
import pytest

from stages.arpabet import ESPEAK_TO_ARPABET, espeak_word_to_arpabet, lookup
from stages.format.contract import ContractError, FeatureContract, require_same
from stages.phone_vocab import (
    ARPABET_PHONES,
    ARPABET_VERSION,
    ESPEAK_PHONE_VERSION,
    ESPEAK_PHONES,
    PHONE_WORD_BOUNDARY,
    PUNCTUATION,
    VOCABS,
    PhoneVocab,
    UnknownSymbol,
    segment_phone,
)
from stages.phonemes import PHONE_SETS, PhonemeStage

LRS2_UPPER = "WHEN YOU'RE COOKING CHIPS AT HOME THE US AND IT MATTER"   # LRS2 writes transcripts in capitals
TEN_WORDS = "the quick brown fox jumps over the lazy dog today"


@pytest.fixture(scope="module")
def stages() -> dict[str, PhonemeStage]:
    return {name: PhonemeStage(phone_set=name) for name in PHONE_SETS}


def one(stage: PhonemeStage, text: str) -> dict:
    (row,) = stage([{"clip_id": "c", "task": "visual_tts", "transcript": text}])
    assert row.get("reject_reason") is None, row
    return row


@pytest.mark.parametrize("name", list(PHONE_SETS))
def test_upper_and_lower_case_give_the_same_ids(stages, name):
    upper, lower = one(stages[name], LRS2_UPPER), one(stages[name], LRS2_UPPER.lower())
    assert np.array_equal(upper["phone_ids"], lower["phone_ids"])


def test_all_caps_words_are_not_spelled_out(stages):
    text = one(stages["espeak-phone"], "THE US AND IT")["phonemes"]
    assert "j uː" not in text.replace("ˌ", "").replace("ˈ", "")   # "US" as letters is /juː ɛs/
    assert text.split(" | ")[1] in ("ʌ s", "ˌʌ s", "ˈʌ s")


def test_one_token_per_phone_with_stress_on_the_vowel(stages):
    row = one(stages["espeak-phone"], TEN_WORDS)
    tokens = stages["espeak-phone"].vocab.tokens(row["phone_ids"])
    phones = [p for p in row["phonemes"].split(" ") if p != PHONE_WORD_BOUNDARY]
    assert tokens == phones
    assert not {"ˈ", "ˌ", "ː", " ", PHONE_WORD_BOUNDARY} & set(tokens)  # no slot for a mark, a length or a space
    assert all(re.sub("[ˈˌ]", "", t) in ESPEAK_PHONES for t in tokens)
    cmudict_phones = sum(len(lookup(w)) for w in TEN_WORDS.split())
    assert abs(len(tokens) - cmudict_phones) <= 0.15 * cmudict_phones  # as many tokens as phones, about
    legacy = one(stages["ipa-char"], TEN_WORDS)["phone_ids"]
    assert len(legacy) > 1.3 * len(tokens)  # characters: stress, length and spaces each took a slot


def test_arpabet_is_cmudict_with_stress(stages):
    row = one(stages["arpabet"], TEN_WORDS)
    expected = [p for w in TEN_WORDS.split() for p in lookup(w)]
    assert stages["arpabet"].vocab.tokens(row["phone_ids"]) == expected
    assert "AH0" in expected and any(p.endswith("1") for p in expected)


def test_arpabet_takes_espeak_for_words_cmudict_lacks(stages):
    assert lookup("Blorptastic") is None and lookup("HELLO") == ["HH", "AH0", "L", "OW1"]
    row = one(stages["arpabet"], "Blorptastic met Schrödinger")
    tokens = stages["arpabet"].vocab.tokens(row["phone_ids"])
    assert set(tokens) <= set(ARPABET_PHONES) and len(tokens) >= 12
    assert espeak_word_to_arpabet(["h", "ˈɑːɹ", "t"]) == ["HH", "AA1", "R", "T"]
    assert espeak_word_to_arpabet(["b", "ˈʌ", "ʔ", "n̩"]) == ["B", "AH1", "T", "AH0", "N"]
    with pytest.raises(UnknownSymbol):
        espeak_word_to_arpabet(["ʘ"])  # a click: no ARPAbet phone, refused rather than guessed
    assert set(ESPEAK_TO_ARPABET) == set(ESPEAK_PHONES)  # every espeak phone of the table has its ARPAbet


def test_word_boundary_token_is_optional():
    plain, bounded = PhonemeStage(), PhonemeStage(word_boundary=True)
    a, b = one(plain, TEN_WORDS)["phone_ids"], one(bounded, TEN_WORDS)["phone_ids"]
    boundary = bounded.vocab.encode([PHONE_WORD_BOUNDARY])[0]
    assert len(b) == len(a) + 9 and int((b == boundary).sum()) == 9
    assert plain.vocab_dict() != bounded.vocab_dict()


def test_spelled_letters_run_together_are_split():
    assert segment_phone("ˈææ", ESPEAK_PHONES) == ["ˈæ", "æ"]
    assert segment_phone("ʘ", ESPEAK_PHONES) == ["ʘ"]
    row = one(PhonemeStage(), "aaaaaaaaaa bbbbbbbbb")
    assert len(row["phone_ids"]) > 10


def test_punctuation_marks_are_pause_tokens(stages):
    row = one(stages["espeak-phone"], "Wait, what? Yes!")
    tokens = stages["espeak-phone"].vocab.tokens(row["phone_ids"])
    assert [t for t in tokens if t in PUNCTUATION] == [",", "?", "!"]


def test_vocabulary_tables():
    arpabet = VOCABS[ARPABET_VERSION]
    assert arpabet.symbols[:4] == ("<pad>", "AA0", "AA1", "AA2") and len(ARPABET_PHONES) == 69
    assert arpabet.symbols[69] == "ZH"  # ids 0..69: the reference's 70 ARPAbet ids, 0 = no speech
    for vocab in VOCABS.values():
        assert len(vocab) <= 256 and PhoneVocab.from_dict(vocab.to_dict()) == vocab
    tampered = VOCABS[ESPEAK_PHONE_VERSION].to_dict()
    tampered["symbols"] = tampered["symbols"][:1] + tampered["symbols"][2:] + ["ʘ"]
    with pytest.raises(ValueError, match="differ"):
        PhoneVocab.from_dict(tampered)


def _contract(phones: dict) -> FeatureContract:
    return FeatureContract(sample_rate=16000, video_fps=10.0, video_dim=8, video_encoder={"name": "clip", "dim": 8},
                           mel={"n_mels": 64, "hop_length": 160}, phones=phones, loudness={}, max_seconds=10.0)


def test_contracts_of_two_phone_sets_do_not_mix(stages):
    contracts = [(name, _contract(stage.vocab_dict())) for name, stage in stages.items()]
    assert len({c.feature_hash for _, c in contracts}) == 3
    with pytest.raises(ContractError, match="phones.vocab.version"):
        require_same(contracts[:2], "re-extract")
    no_norm = _contract(PhonemeStage(text_norm=None).vocab_dict())
    with pytest.raises(ContractError, match="phones.text_norm.version"):
        require_same([("a", contracts[0][1]), ("b", no_norm)], "re-extract")


def test_a_contract_rebuilds_its_stage(stages):
    for stage in stages.values():
        again = PhonemeStage.from_contract(stage.vocab_dict())
        assert again.vocab_dict() == stage.vocab_dict()
    old = PhonemeStage(phone_set="ipa-char", text_norm=None).vocab_dict()
    assert "phone_set" not in old and "text_norm" not in old  # what contracts held before phone sets
    legacy = PhonemeStage.from_contract(old)
    assert legacy.vocab.version == "ipa-v1" and legacy.text_norm is None and legacy.vocab_dict() == old
    assert one(legacy, "in 2024")["phonemes"] == one(PhonemeStage(phone_set="ipa-char", text_norm=None),
                                                     "in 2024")["phonemes"]
