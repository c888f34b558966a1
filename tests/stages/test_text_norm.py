"""Text normalisation before phonemes: all-caps folding, numbers, currency, times, abbreviations."""

from __future__ import annotations

import pytest

from stages.text_norm import STEPS, case_fold, describe, normalize_text


@pytest.mark.parametrize("text, expected", [
    ("WHEN YOU'RE COOKING CHIPS", "when you're cooking chips"),
    ("THE US AND IT", "the us and it"),
    ("The US economy", "The US economy"),       # mixed case: acronyms are written as such, espeak reads them
    ("I", "I"),                                 # one cased letter says nothing
])
def test_case_fold(text, expected):
    assert case_fold(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("A robot bought 3 apples for $5.", "A robot bought three apples for five dollars."),
    ("It costs $12.50 or £1.", "It costs twelve dollars fifty cents or one pound."),
    ("About €20,000 each", "About twenty thousand euros each"),
    ("An 80% discount", "An eighty percent discount"),
    ("Call me at 10:30, not 8:00 or 9:05.", "Call me at ten thirty, not eight o'clock or nine oh five."),
    ("The 21st time", "The twenty-first time"),
    ("Printing, in 1869", "Printing, in eighteen sixty-nine"),
    ("1,500 people, version 4.6.", "one thousand five hundred people, version four point six."),
    ("Mr. Smith & Dr. Jones", "mister Smith and doctor Jones"),
    ("No. 5 on Main St.", "number five on Main street"),
    ("St. John, e.g. this", "saint John, for example this"),
])
def test_normalize_text(text, expected):
    assert normalize_text(text) == expected


def test_upper_and_lower_case_normalise_alike():
    upper = "MR. JONES PAID $5 AT 10:30 ON THE 3RD"
    assert normalize_text(upper) == normalize_text(upper.lower())


def test_no_normalisation_and_its_record():
    assert normalize_text("THE US $5", None) == "THE US $5"
    with pytest.raises(ValueError):
        normalize_text("x", "fr-v9")
    assert describe("en-v1")["steps"] == list(STEPS) and describe(None) == {"version": None}
