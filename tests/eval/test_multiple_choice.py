"""The multiple-choice scorer on the tiny Llama: batched option log-likelihoods equal a plain
one-sequence-at-a-time loop, both picks (raw and per character) follow them, and bad rows fail
with file:line."""

import json

import pytest
import torch

from deltatune.data import load_records, qa_prompt_messages
from deltatune.errors import DeltatuneError
from deltatune.eval.multiple_choice import choice_accuracy, choice_questions, option_logprobs
from deltatune.generation import chat_prompt_ids

ROWS = [
    {"question": "What is the capital of France?", "options": ["Paris", "Lyon", "Marseille", "Nice"], "answer": 0,
     "subject": "geography"},
    {"question": "2 + 2 =", "choices": ["3", "4"], "answer": "4", "subject": "arithmetic"},
    {"question": "Which animal barks?", "options": ["a cat", "a dog", "a small brown cow"], "answer": "B",
     "subject": "geography"},
    {"question": "Pick the colour.", "options": ["blue", "seventeen"], "answer": 0},
]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def hand_logprob(model, tokenizer, question: str, option: str, system_prompt=None) -> float:
    """log p(option | chat prompt), one sequence, the plain HF forward, no batching or masks."""
    prompt = chat_prompt_ids(tokenizer, qa_prompt_messages({"instruction": question}, system_prompt))
    option_ids = tokenizer(option, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + option_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0].double(), dim=-1)  # (T, V)
    return sum(float(logps[len(prompt) + k - 1, tok]) for k, tok in enumerate(option_ids))


def test_batched_logprobs_equal_a_one_at_a_time_loop(tiny, tmp_path):
    model, tokenizer = tiny
    questions = choice_questions(load_records(write_jsonl(tmp_path / "mc.jsonl", ROWS)))
    # batches of 3 sequences: rows of different questions and lengths share a padded batch
    got = option_logprobs(model, tokenizer, questions, system_prompt="Answer briefly.", batch_size=3)
    for q, scores in zip(questions, got):
        want = [hand_logprob(model, tokenizer, q.question, o, "Answer briefly.") for o in q.options]
        assert scores == pytest.approx(want, abs=1e-4)
    wide = option_logprobs(model, tokenizer, questions, "Answer briefly.", batch_size=64)
    flat = [x for scores in got for x in scores]
    assert [x for scores in wide for x in scores] == pytest.approx(flat, abs=1e-4)  # batch size changes nothing


def test_accuracy_raw_and_per_character_follow_the_logprobs(tiny, tmp_path):
    model, tokenizer = tiny
    records = load_records(write_jsonl(tmp_path / "mc.jsonl", ROWS))
    scores = choice_accuracy(model, tokenizer, records, batch_size=4)
    raw_right = norm_right = 0
    for row, example in zip(ROWS, scores["examples"]):
        options = row.get("options") or row["choices"]
        hand = [hand_logprob(model, tokenizer, row["question"], o) for o in options]
        raw_pick = max(range(len(hand)), key=hand.__getitem__)
        norm_pick = max(range(len(hand)), key=lambda i: hand[i] / len(options[i]))
        assert (example["pick"], example["pick_norm"]) == (raw_pick, norm_pick)
        raw_right += raw_pick == example["answer"]
        norm_right += norm_pick == example["answer"]
    assert [e["answer"] for e in scores["examples"]] == [0, 1, 1, 0]  # index, text, letter
    assert scores["mc_accuracy"] == raw_right / 4 and scores["mc_accuracy_norm"] == norm_right / 4
    assert scores["n"] == 4
    assert scores["by_subject"]["geography"]["n"] == 2 and set(scores["by_subject"]) == {"geography", "arithmetic"}


def test_length_normalisation_changes_the_pick(tiny, tmp_path):
    """A 1-character option against a long one: the raw sum prefers the short option (fewer
    tokens, each costing log-probability), the per-character score the long one."""
    model, tokenizer = tiny
    question, options = "Say something.", ["x", "internationalization and localization"]
    hand = [hand_logprob(model, tokenizer, question, o) for o in options]
    assert hand[0] > hand[1] and hand[1] / len(options[1]) > hand[0] / len(options[0])  # the premise
    records = load_records(write_jsonl(tmp_path / "mc.jsonl", [{"question": question, "options": options,
                                                                 "answer": 1}]))
    scores = choice_accuracy(model, tokenizer, records)
    assert (scores["mc_accuracy"], scores["mc_accuracy_norm"]) == (0.0, 1.0)
    assert scores["examples"][0]["logprobs"] == pytest.approx(hand, abs=1e-3)


@pytest.mark.parametrize("row, message", [
    ({"options": ["a", "b"], "answer": 0}, "non-empty `question`"),
    ({"question": "q", "answer": 0}, "exactly one of `options` or `choices`"),
    ({"question": "q", "options": ["a", "b"], "choices": ["a", "b"], "answer": 0}, "exactly one of"),
    ({"question": "q", "options": ["only one"], "answer": 0}, "at least 2 option strings"),
    ({"question": "q", "options": ["a", ""], "answer": 0}, "option 1 of `options` is not a non-empty string"),
    ({"question": "q", "options": ["a", "a"], "answer": 0}, "repeats an option"),
    ({"question": "q", "options": ["a", "b"]}, "`answer` is missing"),
    ({"question": "q", "options": ["a", "b"], "answer": 2}, "`answer` 2 is out of range for 2 options"),
    ({"question": "q", "options": ["a", "b"], "answer": "C"}, "`answer` 'C' is none of the options"),
])
def test_a_bad_row_names_file_and_line(tmp_path, row, message):
    good = {"question": "ok?", "options": ["yes", "no"], "answer": 0}
    path = write_jsonl(tmp_path / "mc.jsonl", [good, good, row])
    with pytest.raises(DeltatuneError, match=f"mc.jsonl:3: .*{message}"):
        choice_questions(load_records(path))
