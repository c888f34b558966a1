"""The phoneme stage alone: real espeak-ng through phonemizer, the versioned vocabularies, every reject reason.
The phone-level sets and text normalisation have their own files (test_phone_sets.py, test_text_norm.py)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from stages import phonemes as phonemes_module
from stages.phone_vocab import (
    ESPEAK_PHONE_VERSION,
    PAD,
    PHONE_LETTERS,
    PUNCTUATION,
    SYMBOLS,
    VOCAB_VERSION,
    PhoneVocab,
    UnknownSymbol,
    default_vocab,
)
from stages.phonemes import PhonemeStage, clean_text, configure_espeak, split_marks


@pytest.fixture(scope="module")
def stage() -> PhonemeStage:
    return PhonemeStage()


@pytest.fixture(scope="module")
def legacy() -> PhonemeStage:
    """The character-level ipa-v1 stage without text normalisation: what outputs made before phone sets hold."""
    return PhonemeStage(phone_set="ipa-char", text_norm=None)


def run(stage: PhonemeStage, *transcripts, task: str = "tts") -> list[dict]:
    rows = [{"clip_id": f"c{i}", "task": task, "transcript": t} for i, t in enumerate(transcripts)]
    return stage(rows)


def ipa(stage: PhonemeStage, text: str) -> str:
    (row,) = run(stage, text)
    assert row.get("reject_reason") is None, row
    return row["phonemes"]


# ---------------------------------------------------------------- vocabulary

def test_vocab_layout():
    vocab = default_vocab()
    assert vocab.version == VOCAB_VERSION == "ipa-v1"
    assert vocab.symbols[0] == PAD and vocab.pad_id == 0
    assert vocab.symbols[1] == " "
    assert len(vocab) == len(set(vocab.symbols)) <= 256  # fits the model's default phone_vocab_size
    for ch in PUNCTUATION + "ˈˌː" + "ɐɚᵻɾʔɬθðŋʃʒæɑɔəɛɜɪʊʌɹ\u0329\u0303":
        assert ch in vocab.symbols, ch


def test_encode_decode_round_trip():
    vocab = default_vocab()
    text = "həlˈoʊ wˈɜːld, ðɪs ɪz ɐ tˈɛst. bˈʌʔn̩ kwˈɑːsɑ̃?"
    ids = vocab.encode(text)
    assert ids.dtype == np.int16 and ids.shape == (len(text),)
    assert 0 not in ids
    assert vocab.decode(ids) == text
    padded = np.concatenate([ids, np.zeros(7, np.int16)])
    assert vocab.decode(padded) == text  # padding decodes to nothing
    assert vocab.encode("").shape == (0,)


def test_encode_refuses_unknown_symbols():
    vocab = default_vocab()
    with pytest.raises(UnknownSymbol) as err:
        vocab.encode("həlˈoʊ5 wˈɜːld˥˥5")
    assert err.value.symbols == ("5", "˥")
    assert isinstance(err.value, KeyError)
    assert "U+0035" in str(err.value)
    with pytest.raises(ValueError):
        vocab.decode([1, len(vocab)])


def test_vocab_dict_round_trip():
    vocab = default_vocab()
    again = PhoneVocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again == vocab and again.symbols == SYMBOLS
    assert np.array_equal(again.encode("ðɪs ɪz"), vocab.encode("ðɪs ɪz"))
    tampered = vocab.to_dict()
    tampered["symbols"] = tampered["symbols"][:1] + tampered["symbols"][2:] + [" "]
    with pytest.raises(ValueError):
        PhoneVocab.from_dict(tampered)  # same version, different ids: refused
    with pytest.raises(ValueError):
        PhoneVocab(version="x", symbols=(" ", "a"))  # id 0 must be padding


# ---------------------------------------------------------------- espeak discovery

def test_configure_espeak_once(stage):
    stage([])  # setup
    info = configure_espeak()
    assert info["source"] in ("system", "bundled")
    assert info["version"].startswith("1.")
    assert configure_espeak() == info
    with pytest.raises(ValueError):
        configure_espeak("somewhere")


def test_configure_espeak_falls_back_to_the_bundled_library(monkeypatch):
    import espeakng_loader
    from phonemizer.backend.espeak import wrapper

    # restored after the test: phonemizer's process-wide choice and this module's record of it
    monkeypatch.setattr(wrapper.EspeakWrapper, "_ESPEAK_LIBRARY", wrapper.EspeakWrapper._ESPEAK_LIBRARY)
    monkeypatch.setattr(wrapper.EspeakWrapper, "_ESPEAK_DATA_PATH", wrapper.EspeakWrapper._ESPEAK_DATA_PATH)
    monkeypatch.setattr(phonemes_module, "_espeak_info", None)
    monkeypatch.delenv("PHONEMIZER_ESPEAK_LIBRARY", raising=False)
    monkeypatch.setattr(wrapper, "_find_library", lambda name: None)  # as on a machine without espeak-ng

    with pytest.raises(RuntimeError, match="no usable espeak-ng"):
        configure_espeak("system")
    info = configure_espeak("auto")
    assert info["source"] == "bundled"
    assert info["library"] == str(espeakng_loader.get_library_path())

    bundled = PhonemeStage(espeak="auto")
    row = run(bundled, "hello world.")[0]
    assert row.get("reject_reason") is None and row["phonemes"].startswith("h")
    assert bundled.vocab_dict()["espeak_library"] == "bundled"


# ---------------------------------------------------------------- the stage

def test_speech_row(stage):
    (row,) = run(stage, "hello world, this is a test.")
    assert row.get("reject_reason") is None
    text = row["phonemes"]
    assert "w ˈɜː l d ," in text and text.endswith("t ˈɛ s t .")
    assert text.count("|") == 4  # six words; the comma separates the second and third
    ids = row["phone_ids"]
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int16 and ids.ndim == 1
    assert len(ids) == len(text.split()) - 4 and 0 not in ids  # no id for "|" without word_boundary
    assert stage.vocab.decode(ids) == text.replace(" |", "")
    assert row["t_phonemes"] >= 0


def test_legacy_speech_row(legacy):
    (row,) = run(legacy, "hello world, this is a test.")
    assert row.get("reject_reason") is None
    text = row["phonemes"]
    assert "wˈɜːld," in text and text.endswith("tˈɛst.")
    assert text.count(" ") == 5  # six words, one boundary token between each
    ids = row["phone_ids"]
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int16 and ids.ndim == 1
    assert len(ids) == len(text) and 0 not in ids
    assert legacy.vocab.decode(ids) == text


@pytest.mark.parametrize("task", ["visual_tts", "joint"])
def test_every_speech_task_is_phonemized(stage, task):
    (row,) = run(stage, "Good morning.", task=task)
    assert row["phonemes"] and len(row["phone_ids"]) > 0


def test_without_stress():
    plain = PhonemeStage(with_stress=False)
    text = ipa(plain, "Understanding pronunciation, naturally.")
    assert "ˈ" not in text and "ˌ" not in text and "," in text


def test_v2s_rows_pass_through(stage):
    rows = stage([{"clip_id": "s", "task": "v2s", "transcript": "ignored words"},
                  {"clip_id": "t", "task": "v2s"}])
    for row in rows:
        assert row["phonemes"] is None and row["phone_ids"] is None
        assert row.get("reject_reason") is None


def test_already_rejected_rows_are_untouched(stage):
    row = {"clip_id": "r", "task": "tts", "transcript": "hello", "reject_stage": "decode",
           "reject_reason": "missing_file", "reject_detail": ""}
    (out,) = stage([row])
    assert out["reject_stage"] == "decode" and "phonemes" not in out


@pytest.mark.parametrize("transcript", [None, "", "   ", "\n\t\r\n", "\u200b\u00ad", 5])
def test_reject_empty_transcript(stage, transcript):
    (row,) = run(stage, transcript)
    assert (row["reject_stage"], row["reject_reason"]) == ("phonemes", "empty_transcript")
    assert row["phonemes"] is None and row["phone_ids"] is None


def test_reject_transcript_too_long():
    short = PhonemeStage(max_chars=20)
    ok, too_long, spaced = run(short, "a" * 10 + " " + "b" * 9, "a" * 10 + " " + "b" * 10, "one  \n\n  two   three")
    assert ok.get("reject_reason") is None
    assert (too_long["reject_stage"], too_long["reject_reason"]) == ("phonemes", "transcript_too_long")
    assert "21" in too_long["reject_detail"]
    assert spaced.get("reject_reason") is None  # length is measured after whitespace is collapsed


@pytest.mark.parametrize("transcript", ["?!...", "🙂🙂", "— « » …", "\ue000\ue001", "👍🏽 !"])
def test_reject_no_phonemes(stage, transcript):
    (row,) = run(stage, transcript)
    assert (row["reject_stage"], row["reject_reason"]) == ("phonemes", "no_phonemes")
    assert row["phonemes"] is None and row["phone_ids"] is None


def test_reject_unknown_symbol():
    # Vietnamese phones carry tone numbers and a dental diacritic: outside ipa-v1, so refused, not mangled
    vietnamese = PhonemeStage(language="vi")
    (row,) = run(vietnamese, "Xin chào Việt Nam")
    assert (row["reject_stage"], row["reject_reason"]) == ("phonemes", "unknown_symbol")
    assert "U+" in row["reject_detail"]
    assert row["phone_ids"] is None


def test_reject_unknown_task(stage):
    (row,) = stage([{"clip_id": "u", "task": "tts ", "transcript": "hello"}])
    assert (row["reject_stage"], row["reject_reason"]) == ("phonemes", "unknown_task")


class _FailsOnKaboom(PhonemeStage):
    """espeak failing on one transcript (injected): the batch call fails, the row-by-row retry finds it."""

    def phonemize_chunks(self, chunks):
        if any("kaboom" in c for c in chunks):
            raise RuntimeError("espeak choked")
        return super().phonemize_chunks(chunks)


def test_batch_failure_is_attributed_to_its_row():
    stage = _FailsOnKaboom()
    good1, bad, good2 = run(stage, "first sentence.", "this one goes kaboom", "third sentence!")
    assert (bad["reject_stage"], bad["reject_reason"]) == ("phonemes", "phonemizer_error")
    assert "espeak choked" in bad["reject_detail"]
    for row, alone in ((good1, "first sentence."), (good2, "third sentence!")):
        assert row.get("reject_reason") is None
        assert row["phonemes"] == ipa(PhonemeStage(), alone)


def test_mixed_batch(stage):
    rows = [
        {"clip_id": "a", "task": "tts", "transcript": "Good evening, everyone."},
        {"clip_id": "b", "task": "tts", "transcript": ""},
        {"clip_id": "c", "task": "v2s"},
        {"clip_id": "d", "task": "visual_tts", "transcript": "?!"},
        {"clip_id": "e", "task": "joint", "transcript": "The quick brown fox jumps over the lazy dog."},
        {"clip_id": "f", "task": "tts", "transcript": "x" * 1001},
        {"clip_id": "g", "task": "tts", "transcript": None},
    ]
    out = stage(rows)
    assert [r["clip_id"] for r in out] == list("abcdefg")
    reasons = {r["clip_id"]: r.get("reject_reason") for r in out}
    assert reasons == {"a": None, "b": "empty_transcript", "c": None, "d": "no_phonemes", "e": None,
                       "f": "transcript_too_long", "g": "empty_transcript"}
    for r in out:
        alive_speech = r["clip_id"] in ("a", "e")
        assert (r["phone_ids"] is not None) == alive_speech
    # each good row got its own phonemes, as if phonemized alone
    assert out[0]["phonemes"] == ipa(stage, "Good evening, everyone.")
    assert out[4]["phonemes"] == ipa(stage, "The quick brown fox jumps over the lazy dog.")


def test_newlines_and_controls_do_not_split_or_shift(stage):
    one_line = ipa(stage, "line one line two line three")
    rows = run(stage, "line one\nline two\r\nline\tthree", "line one\u2028line two\x00line three",
               "after the breaks")
    assert rows[0]["phonemes"] == one_line and rows[1]["phonemes"] == one_line
    assert rows[2]["phonemes"] == ipa(stage, "after the breaks")


def test_clean_text():
    assert clean_text("  a\tb\nc\r\nd\u2028e\x00f  g\u00adh \u200b ") == "a b c d e f gh"
    assert clean_text("cafe\u0301") == "caf\u00e9"  # NFC


@pytest.mark.parametrize("name", ["stage", "legacy"])
def test_decimal_points_do_not_misalign_the_batch(name, request):
    # phonemizer's own punctuation handling turns "4.6." into two lines and shifts every later row; without text
    # normalisation espeak reads the numbers, with it they reach espeak as words
    stage = request.getfixturevalue(name)
    rows = run(stage, "Version 4.6.", "hello there", "It costs 20,000 dollars, at 10:30.", "goodbye now")
    assert rows[0]["phonemes"].endswith(".") and "pɔɪnt" in rows[0]["phonemes"].replace(" ", "").replace("ˈ", "")
    assert rows[1]["phonemes"] == ipa(stage, "hello there")
    assert rows[2]["phonemes"].count(",") == 1 and rows[2]["phonemes"].endswith(".")
    assert rows[3]["phonemes"] == ipa(stage, "goodbye now")


def test_punctuation_is_kept_as_pause_tokens(stage):
    text = ipa(stage, 'Wait, what? "Yes" (maybe); no: stop! ¿Sí? ¡Ya!')
    marks = [ch for ch in text if ch in PUNCTUATION]
    assert marks == [",", "?", '"', '"', "(", ")", ";", ":", "!", "¿", "?", "¡", "!"]
    assert split_marks("Hi, you.") == ["Hi", ", ", "you", ".", ""]


def test_non_ascii_and_normalisation(stage):
    cafe = ipa(stage, "café")
    assert ipa(stage, "cafe\u0301") == cafe  # decomposed accents are composed before espeak sees them
    for word in ("naïve", "résumé", "façade", "jalapeño", "croissant", "Zürich"):
        assert any(ch in PHONE_LETTERS for ch in ipa(stage, word)), word


def test_numbers_and_currency_are_spelled_out(stage):
    paid = ipa(stage, "I paid $5")
    assert ipa(stage, "five") in paid and ipa(stage, "dollar") in paid
    assert ipa(stage, "twenty-four") in ipa(stage, "in 2024")


def test_emoji_are_not_spoken(stage):
    assert ipa(stage, "I love it 😀👍🏽!") == ipa(stage, "I love it!")


def test_vocab_dict(stage):
    d = stage.vocab_dict()
    json.dumps(d)
    assert PhoneVocab.from_dict(d["vocab"]) == stage.vocab
    assert d["vocab"]["version"] == ESPEAK_PHONE_VERSION and d["phone_set"] == "espeak-phone"
    assert d["text_norm"]["version"] == "en-v1" and d["word_boundary_token"] is False
    assert d["language"] == "en-us" and d["with_stress"] is True
    assert d["espeak_version"].startswith("1.") and d["phonemizer_version"]


# ---------------------------------------------------------------- coverage of the vocabulary

WORDS = {
    "subject": ["the cat", "my neighbour", "a young engineer", "our orchestra", "the thirsty giraffe",
                "Doctor Nguyen", "the Beijing office", "a jalapeño farmer", "Zoë", "the café owner",
                "Mrs. O'Brien", "the NASA team", "everybody", "the Llanelli choir", "a bottle of water"],
    "verb": ["quietly measured", "rejected", "couldn't pronounce", "was rhythmically beating", "jumped over",
             "thought about", "will have judged", "usually pleasures", "hurried through", "is vacuuming",
             "bought", "mentioned", "had been writing", "sang", "mispronounced"],
    "object": ["the mountain", "their thousand-year-old castle", "a kitten's button", "the 3rd edition",
               "twenty-two red apples", "a naïve theory", "the genre of the oeuvre", "1,500 euros",
               "$42.50", "version 4.6", "12:45 meetings", "an 80% discount", "the rhythm and blues",
               "the choir's measure", "a beige garage", "hiccups", "e.g. this one", "www.example.com",
               "Schrödinger's cat", "the fjord", "a croissant", "the year 1999", "#hashtags & @mentions"],
    "tail": [".", "!", "?", ", didn't they?", "; honestly.", ": yes, really.", "...", " — apparently.",
             ' "quote".', " (twice).", "", " today", " in Zürich.", " «again».", " …"],
}


def _sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(WORDS['subject'])} {rng.choice(WORDS['verb'])} {rng.choice(WORDS['object'])}"
            f"{rng.choice(WORDS['tail'])}".capitalize() for _ in range(n)]


def test_varied_sentences_need_no_unknown_symbol(stage):
    sentences = _sentences(300)
    rows = []
    for start in range(0, len(sentences), 64):  # a few batches, as the pipeline sends them
        rows += run(stage, *sentences[start:start + 64])
    rejected = [(r["transcript"], r["reject_reason"], r["reject_detail"]) for r in rows if r.get("reject_reason")]
    assert rejected == []
    used = set()
    for r in rows:
        ids = r["phone_ids"]
        assert ids.dtype == np.int16 and len(ids) > 0 and ids.min() > 0 and ids.max() < len(stage.vocab)
        used.update(r["phonemes"])
    assert len(used & PHONE_LETTERS) >= 35  # the sentences really exercise the phone set


def test_reject_unreadable_transcript(stage):
    (row,) = stage([{"clip_id": "u", "task": "tts", "transcript": None,
                     "transcript_problem": "1688.normalized.txt is not valid UTF-8 (byte 3: invalid start byte)"}])
    assert (row["reject_stage"], row["reject_reason"]) == ("phonemes", "unreadable_transcript")
    assert "not valid UTF-8" in row["reject_detail"]
