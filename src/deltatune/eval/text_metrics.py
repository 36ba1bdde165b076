"""Answer-matching metrics for generated text: exact match and answer-contained.

    normalise("  The Eiffel-Tower!! ")       -> "the eiffel tower"
    normalise("Seven days, $1,200")         -> "7 days 1200"
    exact_match("Paris.", "paris")          -> True
    answer_contained("It is Paris.", "Paris") -> True

Both compare normalised strings (lowercase, dashes and slashes as spaces, other punctuation
removed, number words up to 99 as digits, whitespace collapsed), so a model is not penalised
for "Paris." vs "paris", "$1,200" vs "1200" or "seven" vs "7". Unlike SQuAD's normaliser,
articles are kept: short fact answers ("The Hague") would otherwise collapse.
"""

from __future__ import annotations

import re
import unicodedata

_SEPARATORS = re.compile(r"[-\u2010-\u2015/_]")  # word separators: "Eiffel-Tower" = "Eiffel Tower"
_PUNCT = re.compile(r"[^\w\s]")  # `\w` keeps letters and digits of any script
# numbers are as often spelled out as written: "seven days" must match "7 days"
_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(_UNITS)} | {w: str(20 + 10 * i) for i, w in enumerate(_TENS)}
# "twenty-one" -> "21" before hyphens become spaces (else it would read "20 1")
_COMPOUND = re.compile(rf"\b({'|'.join(_TENS)})[-\s]({'|'.join(_UNITS[1:10])})\b")


def _compound(match: re.Match) -> str:
    return str(int(_NUMBER_WORDS[match[1]]) + int(_NUMBER_WORDS[match[2]]))


def normalise(text: str) -> str:
    """Lowercase, dashes/slashes -> space, other punctuation removed, number words ->
    digits (up to 99), whitespace collapsed."""
    text = _COMPOUND.sub(_compound, unicodedata.normalize("NFKC", text).lower())
    # other punctuation is dropped, not spaced: "$1,200" = "1200", "U.S.A." = "usa"
    text = _PUNCT.sub("", _SEPARATORS.sub(" ", text))
    return " ".join(_NUMBER_WORDS.get(word, word) for word in text.split())


def exact_match(pred: str, answer: str) -> bool:
    """The prediction is the answer, after normalising both."""
    return normalise(pred) == normalise(answer)


def answer_contained(pred: str, answer: str) -> bool:
    """The normalised answer occurs in the normalised prediction as whole words, a plural
    "s"/"es" on its last word allowed.

    Word boundaries matter: answer "12" must not count as found in "2012", nor "bee" in
    "honeybee"; "grapes" does answer "grape"."""
    target = normalise(answer)
    if not target:
        return False
    return re.search(rf"(?<!\S){re.escape(target)}(?:e?s)?(?!\S)", normalise(pred)) is not None
