"""Hand-checked values of the text metrics beyond exact match: token F1, ROUGE-L, BLEU, chrF.

Each expected number is worked out in the comment above it from the metric's definition."""

import pytest

from deltatune.eval.metrics import METRICS, generation_scores, token_f1, words


def score(name: str, predictions: list[str], references: list[str]) -> float:
    return generation_scores([name], predictions, references)[name]


def test_token_f1_is_squad_word_overlap():
    # shared words with multiplicity: the x2, cat, on, mat = 5 of 6 each side -> P = R = 5/6
    assert token_f1("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6)
    # P = 1/2, R = 1 -> F1 = 2 * 0.5 / 1.5
    assert token_f1("Paris, France", "Paris") == pytest.approx(2 / 3)
    assert token_f1("Berlin", "Paris") == 0.0
    assert token_f1("", "Paris") == 0.0 and token_f1("...", "!") == 1.0  # both empty after normalising
    assert token_f1("seven days", "7 Days") == 1.0  # the project's normalisation: number words, case
    # CJK characters are words: 北 京 市 vs 北 京 -> P = 2/3, R = 1 -> F1 = 0.8
    assert words("北京市") == ["北", "京", "市"]
    assert token_f1("北京市", "北京") == pytest.approx(0.8)
    # the split's score is the mean over examples: (5/6 + 2/3 + 0) / 3
    got = score("token_f1", ["The cat sat on the mat.", "Paris, France", "Berlin"],
                ["the cat is on the mat", "Paris", "Paris"])
    assert got == pytest.approx((5 / 6 + 2 / 3) / 3)


def test_rouge_l_is_the_longest_common_subsequence_f_measure():
    # LCS("the cat lay on the mat", "the cat sat on the mat") = 5 words: P = R = 5/6
    # LCS("on the mat the cat", ref) = "on the mat" = 3: P = 3/5, R = 3/6, F = 0.6 / 1.1 = 6/11
    got = score("rouge_l", ["the cat lay on the mat", "on the mat the cat"], ["the cat sat on the mat"] * 2)
    assert got == pytest.approx((5 / 6 + 6 / 11) / 2)  # = 91/132
    # rouge_score's own tokenizer keeps only [a-z0-9] (this would be 0): ours keeps every script
    assert score("rouge_l", ["北京市"], ["北京"]) == pytest.approx(0.8)
    assert score("rouge_l", ["Café Müller!"], ["café müller"]) == 1.0


def test_bleu_is_sacrebleu_corpus_bleu():
    # hyp "the cat sat on the mat" vs ref "the cat sat on a mat": clipped n-gram precisions
    # 5/6, 3/5, 2/4, 1/3, equal lengths (brevity penalty 1): BLEU = 100 * (1/12)^(1/4)
    assert score("bleu", ["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(100 * (1 / 12) ** 0.25)
    # corpus level: counts are summed over sentences before the precisions are taken. With a
    # second, identical 5-word pair: 10/11, 7/9, 5/7, 3/5 -> 100 * (10/33)^(1/4), which is not
    # the mean of the two sentence scores
    got = score("bleu", ["the dog ran home fast", "the cat sat on the mat"],
                ["the dog ran home fast", "the cat sat on a mat"])
    assert got == pytest.approx(100 * (10 / 33) ** 0.25)
    assert score("bleu", ["an exact copy of it"], ["an exact copy of it"]) == pytest.approx(100.0)


def test_chrf_is_sacrebleu_corpus_chrf():
    # whitespace removed: "thecat" vs "thehat". Character n-gram matches / counts (same both
    # sides): n=1 5/6, n=2 3/5 (th he at), n=3 1/4 (the), n=4..6 0. P = R = mean = chrF
    assert score("chrf", ["the cat"], ["the hat"]) == pytest.approx(100 * (5 / 6 + 3 / 5 + 1 / 4) / 6)
    # "abcd" vs "abc": P_n = 3/4, 2/3, 1/2 and R_n = 1 for n = 1..3; no reference 4-gram, so
    # orders 4-6 do not count. P = 23/36, R = 1, F_beta=2 = 5PR / (4P + R) = 115/128
    assert score("chrf", ["abcd"], ["abc"]) == pytest.approx(100 * 115 / 128)


def test_every_generation_metric_is_in_the_table_with_its_kind():
    assert {n for n, m in METRICS.items() if m.kind == "generation"} == {
        "exact_match", "contains", "token_f1", "rouge_l", "bleu", "chrf"}
    assert {METRICS[n].kind for n in ("loss", "perplexity")} == {"loss"}
    assert {METRICS[n].kind for n in ("mc_accuracy", "mc_accuracy_norm")} == {"choice"}
    got = generation_scores(["exact_match", "contains", "loss"], ["Paris.", "It is Oslo"], ["paris", "Rome"])
    assert got == {"exact_match": 0.5, "contains": 0.5}  # loss is not a generation metric
