"""The metric table: every name `eval.metrics` accepts, how a split is scored for it, and the
text scorers behind the generation metrics.

    METRICS["rouge_l"].kind                                   -> "generation"
    generation_scores(["token_f1", "bleu"], predictions, references)
                                                              -> {"token_f1": 0.61, "bleu": 23.4}
    split_metrics("test", cfg_eval, records)                  -> ("exact_match", "contains")

A metric's `kind` says what the split's evaluation must run to get it:
- generation: greedy answers to each question (deltatune.eval.qa) against the reference (the
  record's short `answer`, else its `output`): exact_match and contains
  (deltatune.eval.text_metrics), token_f1 (SQuAD's word-overlap F1, on the same normalised
  words), rouge_l (ROUGE-L F-measure, `rouge_score`), bleu and chrf (corpus-level, `sacrebleu`
  with its standard settings, on sacrebleu's 0-100 scale). The others are fractions in [0, 1];
  token_f1 and rouge_l are averaged over the examples.
- loss: token loss and perplexity of the reference outputs (deltatune.eval.perplexity);
- choice: multiple-choice accuracy by option log-likelihood, raw and per character
  (deltatune.eval.multiple_choice);
- sampled: share of `eval.probe_samples` seeded sampled replies that contain the answer;
- kl: drift from the base on its own replies (the `forgetting` split only).

Without `eval.metrics` each split gets what it always got (`default_metrics`); a split's list
replaces its defaults. The learning verdict reads test/contains and val/loss, the forgetting
measures probe/contains (and probe/sampled_contains, which `eval.probe_samples` > 0 always adds
to the probe): a selection without them leaves those checks unmeasured.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from deltatune.errors import DeltatuneError
from deltatune.eval.text_metrics import answer_contained, exact_match, normalise

GENERATION, LOSS, CHOICE, SAMPLED, KL = "generation", "loss", "choice", "sampled", "kl"
Scorer = Callable[[list[str], list[str]], float]  # (predictions, references) -> score of the split


@dataclass(frozen=True)
class Metric:
    kind: str  # GENERATION, LOSS, CHOICE, SAMPLED or KL: what the split's evaluation runs
    about: str  # one line, for error messages and docs
    score: Scorer | None = None  # generation metrics: the split's score from its answers


# CJK ideographs and kana carry no spaces between words: each character counts as a word
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")


def words(text: str) -> list[str]:
    """The words token_f1 and rouge_l compare: `text_metrics.normalise` (lowercase, no
    punctuation, number words as digits), each CJK character a word of its own."""
    return _CJK.sub(r" \1 ", normalise(text)).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's F1 of one answer: harmonic mean of the precision and recall of the shared words
    (counted with multiplicity). Two empty answers agree (1.0); one empty answer scores 0."""
    pred, ref = words(prediction), words(reference)
    if not pred or not ref:
        return float(pred == ref)
    shared = sum((Counter(pred) & Counter(ref)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(pred), shared / len(ref)
    return 2 * precision * recall / (precision + recall)


class _Words:
    """`rouge_score`'s tokenizer interface over `words`: its default tokenizer keeps only
    ASCII letters and digits, which would score any other script 0."""

    def tokenize(self, text: str) -> list[str]:
        return words(text)


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F-measure (longest common word subsequence; `rouge_score`)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Words())
    scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
    return sum(scores) / len(scores)


def corpus_bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100) with sacrebleu's defaults (13a tokens, exp smoothing, case kept)."""
    from sacrebleu.metrics import BLEU

    return float(BLEU().corpus_score(predictions, [references]).score)


def corpus_chrf(predictions: list[str], references: list[str]) -> float:
    """Corpus chrF (0-100): character 1-6-gram F-score, beta 2, whitespace ignored (sacrebleu)."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().corpus_score(predictions, [references]).score)


def _mean_of(per_example: Callable[[str, str], float]) -> Scorer:
    return lambda preds, refs: sum(float(per_example(p, r)) for p, r in zip(preds, refs)) / len(preds)


METRICS: dict[str, Metric] = {
    "exact_match": Metric(GENERATION, "greedy answer equals the reference (normalised)", _mean_of(exact_match)),
    "contains": Metric(GENERATION, "greedy answer contains the reference (whole words)", _mean_of(answer_contained)),
    "token_f1": Metric(GENERATION, "SQuAD word-overlap F1 of answer and reference", _mean_of(token_f1)),
    "rouge_l": Metric(GENERATION, "ROUGE-L F-measure (rouge_score)", rouge_l),
    "bleu": Metric(GENERATION, "corpus BLEU, 0-100 (sacrebleu)", corpus_bleu),
    "chrf": Metric(GENERATION, "corpus chrF, 0-100 (sacrebleu)", corpus_chrf),
    "loss": Metric(LOSS, "mean token loss of the reference outputs"),
    "perplexity": Metric(LOSS, "exp(loss)"),
    "mc_accuracy": Metric(CHOICE, "multiple choice: the option of highest log-likelihood is right"),
    "mc_accuracy_norm": Metric(CHOICE, "multiple choice: highest log-likelihood per character"),
    "sampled_contains": Metric(SAMPLED, "share of eval.probe_samples sampled replies containing the answer"),
    "kl": Metric(KL, "KL from the base on its own replies (the forgetting split)"),
}

QA_DEFAULT = ("exact_match", "contains")
LOSS_DEFAULT = ("loss", "perplexity")
CHOICE_DEFAULT = ("mc_accuracy", "mc_accuracy_norm")
# what each named split measured before `eval.metrics` existed; any other split (a --data file,
# an eval.extra split) gets QA_DEFAULT + LOSS_DEFAULT, or CHOICE_DEFAULT for a multiple-choice file
DEFAULT_METRICS = {"test": QA_DEFAULT, "probe": QA_DEFAULT, "val": LOSS_DEFAULT, "forgetting": ("kl",)}


def known_metrics() -> str:
    return ", ".join(METRICS)


def kinds(names) -> set[str]:
    return {METRICS[name].kind for name in names}


def check_metric_list(names: list[str], where: str, probe_samples: int | None = None) -> None:
    """ValueError naming `where` (e.g. "eval.metrics.test") for a list no split can compute:
    empty, an unknown or repeated name, multiple choice mixed with other kinds, kl anywhere but
    the forgetting split, sampled_contains without eval.probe_samples."""
    if not names:
        raise ValueError(f"{where} is empty; remove it to keep the split's default metrics")
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r} in {where}; known: {known_metrics()}")
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise ValueError(f"{where} names {repeated[0]!r} twice")
    found = kinds(names)
    if CHOICE in found and found != {CHOICE}:
        raise ValueError(f"{where}: mc_accuracy / mc_accuracy_norm score a multiple-choice file and cannot be mixed "
                         f"with {', '.join(n for n in names if METRICS[n].kind != CHOICE)} in one split")
    if (KL in found) != where.endswith(".forgetting") or (KL in found and found != {KL}):
        raise ValueError(f"{where}: kl is the forgetting split's one metric (eval.metrics.forgetting: [kl])")
    if SAMPLED in found and probe_samples == 0:
        raise ValueError(f"{where}: sampled_contains needs eval.probe_samples > 0 (the sampled replies per question)")


def default_metrics(split: str, records: list[dict] | None = None) -> tuple[str, ...]:
    """What `split` measures when `eval.metrics` does not say (see DEFAULT_METRICS)."""
    from deltatune.eval.multiple_choice import is_choice_file

    if split in ("val", "forgetting"):
        return DEFAULT_METRICS[split]
    if records is not None and is_choice_file(records):
        return CHOICE_DEFAULT
    return DEFAULT_METRICS.get(split, QA_DEFAULT + LOSS_DEFAULT)


def split_metrics(split: str, cfg_eval, records: list[dict] | None = None) -> tuple[str, ...]:
    """The metrics `split` reports: its entry of `eval.metrics` (a mapping), the list (a plain
    list: every split that generates answers), else its defaults; the probe always gets
    sampled_contains when eval.probe_samples > 0, as before `eval.metrics` existed."""
    chosen, default = getattr(cfg_eval, "metrics", None), default_metrics(split, records)
    if isinstance(chosen, dict):
        picked = chosen.get(split)
    else:
        picked = chosen if chosen is not None and GENERATION in kinds(default) else None
    metrics = tuple(picked) if picked else default
    sampled = split == "probe" and cfg_eval.probe_samples and GENERATION in kinds(metrics)
    if sampled and "sampled_contains" not in metrics:
        metrics += ("sampled_contains",)
    return metrics


def generation_scores(names, predictions: list[str], references: list[str]) -> dict[str, float]:
    """{name: score} of the generation metrics among `names`, from the split's answers."""
    if not predictions:
        raise DeltatuneError("generation metrics: no answers to score")
    return {name: METRICS[name].score(predictions, references) for name in names if METRICS[name].kind == GENERATION}
