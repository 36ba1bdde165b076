"""Multiple-choice accuracy (MMLU-style) by the log-likelihood of each option, batched.

    scores = choice_accuracy(model, tokenizer, load_records("mmlu.jsonl"), system_prompt=None)
    scores["mc_accuracy"], scores["mc_accuracy_norm"], scores["n"], scores["by_subject"]

The file: JSONL (or a .json list), one question per row.

    {"question": "What is the capital of France?", "options": ["Paris", "Lyon", "Nice"], "answer": 0}
    {"question": "2 + 2 =", "choices": ["3", "4"], "answer": "4", "subject": "arithmetic"}

- `question`: the text asked; it becomes the user turn of the chat template, exactly as a QA
  question does (`deltatune.data.qa_prompt_messages`, with `data.system_prompt`);
- `options` (or `choices`): two or more distinct, non-empty strings;
- `answer`: the right option's 0-based index, its text, or its letter ("A" is the first);
- `subject` (optional): accuracy is also reported per subject.
A bad row is a DeltatuneError naming file:line.

Scoring (cloze style, as lm-evaluation-harness does for ARC / HellaSwag and MMLU's
continuation variant): each option is the assistant's reply to the question, and its score is
log p(option tokens | prompt), summed over the option's tokens. `mc_accuracy` picks the option
with the highest sum; `mc_accuracy_norm` the highest sum per character of the option (the
harness's acc_norm), which removes the raw sum's bias towards short options. The options are
not listed in the prompt. Every (question, option) sequence of a batch goes through the model
in one forward (`deltatune.forward`), only the option positions through the vocabulary head.
"""

from __future__ import annotations

import dataclasses
import string

import torch
from tqdm.auto import tqdm

from deltatune.errors import DeltatuneError

OPTION_KEYS = ("options", "choices")


@dataclasses.dataclass(frozen=True)
class Question:
    question: str
    options: tuple[str, ...]
    answer: int  # index into options
    subject: str | None = None


def is_choice_file(records: list[dict]) -> bool:
    """The records are multiple-choice rows (the first one has `options` or `choices`)."""
    return bool(records) and any(key in records[0] for key in OPTION_KEYS)


def choice_questions(records: list[dict]) -> list[Question]:
    """Validated questions; a bad row raises naming its file:line (the record's `_origin`)."""
    return [_question(record) for record in records]


def _question(record: dict) -> Question:
    from deltatune.data.sources import origin

    where = origin(record)
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise DeltatuneError(f"{where}: a multiple-choice row needs a non-empty `question` string "
                             f"(format: deltatune.eval.multiple_choice)")
    present = [key for key in OPTION_KEYS if key in record]
    if len(present) != 1:
        raise DeltatuneError(f"{where}: give the options as exactly one of `options` or `choices` (a list of strings)")
    options = record[present[0]]
    if not isinstance(options, list) or len(options) < 2:
        raise DeltatuneError(f"{where}: `{present[0]}` must be a list of at least 2 option strings")
    for i, option in enumerate(options):
        if not isinstance(option, str) or not option.strip():
            raise DeltatuneError(f"{where}: option {i} of `{present[0]}` is not a non-empty string ({option!r})")
    if len(set(options)) != len(options):
        raise DeltatuneError(f"{where}: `{present[0]}` repeats an option; each option must be distinct")
    subject = record.get("subject")
    return Question(question, tuple(options), _answer_index(record, options, where),
                    str(subject) if subject is not None else None)


def _answer_index(record: dict, options: list[str], where: str) -> int:
    """`answer` as an index: an int in range, an option's text, or a letter A, B, ..."""
    answer = record.get("answer")
    letters = string.ascii_uppercase[: len(options)]
    how = f"the 0-based index (0-{len(options) - 1}), the option's text or its letter ({letters[0]}-{letters[-1]})"
    if isinstance(answer, bool) or answer is None:
        raise DeltatuneError(f"{where}: `answer` is missing; give {how}")
    if isinstance(answer, int):
        if not 0 <= answer < len(options):
            raise DeltatuneError(f"{where}: `answer` {answer} is out of range for {len(options)} options; give {how}")
        return answer
    if isinstance(answer, str):
        if answer in options:
            return options.index(answer)
        if len(answer.strip()) == 1 and answer.strip().upper() in letters:
            return letters.index(answer.strip().upper())
    raise DeltatuneError(f"{where}: `answer` {answer!r} is none of the options; give {how}")


def choice_accuracy(model, tokenizer, records: list[dict], system_prompt: str | None = None,
                    batch_size: int = 32, desc: str = "multiple choice") -> dict:
    """{"mc_accuracy", "mc_accuracy_norm", "n", ["by_subject"], "examples"} over `records`."""
    questions = choice_questions(records)
    if not questions:
        raise DeltatuneError("multiple choice: no questions to score")
    scores = option_logprobs(model, tokenizer, questions, system_prompt, batch_size, desc)
    examples = []
    for q, logps in zip(questions, scores):
        per_char = [lp / len(option) for lp, option in zip(logps, q.options)]
        examples.append({"question": q.question, "answer": q.answer, "subject": q.subject,
                         "pick": _argmax(logps), "pick_norm": _argmax(per_char),
                         "logprobs": [round(lp, 4) for lp in logps]})
    out = _accuracy(examples)
    subjects = sorted({e["subject"] for e in examples if e["subject"] is not None})
    if subjects:
        out["by_subject"] = {s: _accuracy([e for e in examples if e["subject"] == s]) for s in subjects}
    out["examples"] = examples
    return out


def _accuracy(examples: list[dict]) -> dict:
    n = len(examples)
    return {"mc_accuracy": sum(e["pick"] == e["answer"] for e in examples) / n,
            "mc_accuracy_norm": sum(e["pick_norm"] == e["answer"] for e in examples) / n, "n": n}


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)  # the first of equal maxima


def option_sequences(tokenizer, questions: list[Question], system_prompt: str | None) -> list[tuple[list[int], int]]:
    """(prompt + option token ids, prompt length) per (question, option), questions in order.

    The option is tokenised on its own and appended to the chat prompt, which ends with the
    assistant cue, so each option is scored as the start of the reply."""
    from deltatune.data import qa_prompt_messages
    from deltatune.generation import chat_prompt_ids

    sequences = []
    for q in questions:
        prompt = chat_prompt_ids(tokenizer, qa_prompt_messages({"instruction": q.question}, system_prompt))
        for option in q.options:
            ids = tokenizer(option, add_special_tokens=False)["input_ids"]
            if not ids:
                raise DeltatuneError(f"multiple choice: option {option!r} of {q.question!r} tokenises to nothing")
            sequences.append((prompt + list(ids), len(prompt)))
    return sequences


@torch.inference_mode()
def option_logprobs(model, tokenizer, questions: list[Question], system_prompt: str | None = None,
                    batch_size: int = 32, desc: str = "multiple choice") -> list[list[float]]:
    """Per question, per option: sum of log p(option token | everything before it).

    Sequences are sorted by length and right-padded into batches of `batch_size`; one forward
    per batch. Eval mode (no dropout), restored afterwards."""
    from deltatune.forward import decoder_hidden, output_head
    from deltatune.losses.lm import IGNORE_INDEX
    from deltatune.losses.logps import sequence_logps

    sequences = option_sequences(tokenizer, questions, system_prompt)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
    sums = [0.0] * len(sequences)
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
            chunk = order[start : start + batch_size]
            width = max(len(sequences[i][0]) for i in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # (B, T)
            labels = torch.full((len(chunk), width), IGNORE_INDEX, dtype=torch.long)  # option tokens only
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                seq, n_prompt = sequences[i]
                ids[row, : len(seq)] = torch.tensor(seq)
                labels[row, n_prompt : len(seq)] = torch.tensor(seq[n_prompt:])
                mask[row, : len(seq)] = 1
            hidden, _ = decoder_hidden(model, ids.to(device), mask.to(device))  # (B, T, H)
            logps, _ = sequence_logps(hidden, output_head(model), labels.to(device))  # (B,)
            for i, value in zip(chunk, logps.tolist()):
                sums[i] = value
    finally:
        model.train(was_training)
    out, k = [], 0
    for q in questions:
        out.append(sums[k : k + len(q.options)])
        k += len(q.options)
    return out
