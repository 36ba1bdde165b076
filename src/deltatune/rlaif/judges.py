"""What every judge shares: the protocol, the rubric, the judge prompts and reading a verdict.

    class MyJudge:                       # anything with these four methods is a judge
        name = "my-judge"
        def prefer(self, prompt, response_a, response_b) -> float: ...    # P(A is better)
        def prefer_many(self, triples) -> list[float]: ...
        def score(self, prompt, response) -> float: ...                    # P(response is good)
        def score_many(self, pairs) -> list[float]: ...

    messages = compare_messages(DEFAULT_RUBRIC, "Who founded Acme?", "Ann.", "Bob.")
    messages = grade_messages(DEFAULT_RUBRIC, "Who founded Acme?", "Ann.")
    parse_verdict("  **B**.", ("A", "B"))   # -> "B"

Both judges (`judge_local.LocalJudge`, `judge_endpoint.EndpointJudge`) ask the same
questions, so a local judge and the same model behind `deltatune serve` are comparable.
`prefer` is order-swapped in both: each pair is asked with A first and with B first, which
cancels a judge's bias toward one position (small models have a strong one).
"""

from __future__ import annotations

import math
import re
from typing import Protocol, runtime_checkable

from deltatune.errors import DeltatuneError

DEFAULT_RUBRIC = (
    "A better response is helpful (it answers what was asked), correct (no false or invented "
    "facts) and concise (no padding or repetition)."
)
PREFER_TOKENS = ("A", "B")  # verdicts of a comparison: A is better / B is better
GRADE_TOKENS = ("Yes", "No")  # verdicts of a single-response grade: good / not good

Triple = tuple[str, str, str]  # (prompt, response_a, response_b)
Pair = tuple[str, str]  # (prompt, response)


@runtime_checkable
class Judge(Protocol):
    """A preference judge. Probabilities are in [0, 1]; `*_many` keep their input's order."""

    name: str

    def prefer(self, prompt: str, response_a: str, response_b: str) -> float: ...

    def prefer_many(self, triples: list[Triple]) -> list[float]: ...

    def score(self, prompt: str, response: str) -> float: ...

    def score_many(self, pairs: list[Pair]) -> list[float]: ...


def compare_messages(rubric: str, prompt: str, response_a: str, response_b: str) -> list[dict]:
    """The chat turns asking which of two responses to `prompt` is better by `rubric`."""
    text = (
        "You are judging two responses to a user's question.\n"
        f"Rubric: {rubric.strip()}\n\n"
        f"[Question]\n{prompt.strip()}\n\n"
        f"[Response A]\n{response_a.strip()}\n\n"
        f"[Response B]\n{response_b.strip()}\n\n"
        "Which response is better? Answer with A or B."
    )
    return [{"role": "user", "content": text}]


def grade_messages(rubric: str, prompt: str, response: str) -> list[dict]:
    """The chat turns asking whether one response to `prompt` is good by `rubric`."""
    text = (
        "You are judging a response to a user's question.\n"
        f"Rubric: {rubric.strip()}\n\n"
        f"[Question]\n{prompt.strip()}\n\n"
        f"[Response]\n{response.strip()}\n\n"
        "Is the response good by the rubric? Answer with Yes or No."
    )
    return [{"role": "user", "content": text}]


def read_rubric(path: str | None) -> str:
    """The rubric text of `--rubric FILE`, or the built-in one when no file is given."""
    if path is None:
        return DEFAULT_RUBRIC
    try:
        text = open(path, encoding="utf-8").read().strip()
    except OSError as err:
        raise DeltatuneError(f"--rubric {path}: cannot read it ({err.strerror})") from None
    if not text:
        raise DeltatuneError(f"--rubric {path} is empty: write the judging criteria in it, or drop --rubric")
    return text


_LEAD = re.compile(r"^[\s*_`\"'(\[]*(?:(?:response|answer|verdict)\s*:?\s*)?", re.IGNORECASE)


def parse_verdict(text: str, verdicts: tuple[str, str]) -> str | None:
    """Which of `verdicts` a judge's reply starts with ("A", "**B**", "Response A", "yes."),
    or None when it starts with neither (an abstention)."""
    rest = _LEAD.sub("", text)
    for verdict in verdicts:
        if re.match(rf"{re.escape(verdict)}(?![A-Za-z0-9])", rest, re.IGNORECASE):
            return verdict
    return None


def log_odds(p: float, eps: float = 1e-6) -> float:
    """log(p / (1 - p)), clamped away from +-inf: a judge's score as an unbounded RL reward."""
    p = min(max(p, eps), 1.0 - eps)
    return math.log(p / (1.0 - p))


def swap_average(p_ab: list[float], p_ba: list[float]) -> list[float]:
    """P(A better) from both orders: asked A-first the judge said A with p_ab; asked B-first
    (A shown second) it said its first slot with p_ba, so A won with 1 - p_ba there."""
    return [0.5 * (x + (1.0 - y)) for x, y in zip(p_ab, p_ba, strict=True)]
