"""Generation accuracy on question/answer records: batched greedy answers, matched to the key
(and, for the forgetting probe, the share of sampled replies that contain it).

    scores = qa_accuracy(model, tokenizer, load_records("builtin:orgfacts/test"),
                         system_prompt=None, max_new_tokens=32, batch_size=32)
    scores["contains"], scores["exact_match"], scores["n"], scores["examples"][:3]

Each record becomes a chat prompt (`deltatune.data.qa_prompt_messages`), answered greedily;
the reference is the record's short `answer` (else its full `output`). Prompts are sorted by
length before batching so a batch holds similar lengths and little padding: on this CPU the
decode loop is overhead-bound, so wide batches are what make evaluation fast.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from deltatune.errors import DeltatuneError
from deltatune.eval.text_metrics import answer_contained, exact_match
from deltatune.generation import SamplingParams, chat_prompt_ids, generate


def prompt_messages(record: dict, system_prompt: str | None) -> list[dict]:
    """The chat turns that ask a record's question (data's contract, with a local fallback)."""
    import deltatune.data as data

    if hasattr(data, "qa_prompt_messages"):
        return data.qa_prompt_messages(record, system_prompt)
    # fallback until deltatune.data exports it: instruction (+ input) as the user turn
    user = str(record.get("instruction", "")).strip()
    if str(record.get("input") or "").strip():
        user = f"{user}\n\n{str(record['input']).strip()}"
    if not user:
        raise DeltatuneError(f"QA record has no `instruction` to ask: {_origin(record)}")
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + [{"role": "user", "content": user}]


def reference_answer(record: dict) -> str:
    """The short canonical `answer` when present, else the full `output`."""
    for key in ("answer", "output"):
        value = record.get(key)
        if value is not None and str(value).strip():
            return str(value)
    raise DeltatuneError(f"QA record has neither `answer` nor `output` to check against: {_origin(record)}")


def _origin(record: dict) -> str:
    return str(record.get("_origin", {k: v for k, v in record.items() if not k.startswith("_")}))


def qa_accuracy(
    model,
    tokenizer,
    records: list[dict],
    system_prompt: str | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 32,
    desc: str = "qa",
) -> dict:
    """{"exact_match", "contains", "n", "examples"} over `records` (fractions in [0, 1])."""
    if not records:
        raise DeltatuneError("qa_accuracy: no records to evaluate")
    prompts, answers = _questions(tokenizer, records, system_prompt)
    params = SamplingParams(max_new_tokens=max_new_tokens)
    order = sorted(range(len(records)), key=lambda i: len(prompts[i]))
    predictions: list[str] = [""] * len(records)
    with tqdm(total=len(records), desc=desc, unit="q", leave=False) as bar:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            done = generate(model, tokenizer, [prompts[i] for i in chunk], params)
            for i, completion in zip(chunk, done):
                predictions[i] = completion.text.strip()
            bar.update(len(chunk))

    exact = [exact_match(p, a) for p, a in zip(predictions, answers)]
    contains = [answer_contained(p, a) for p, a in zip(predictions, answers)]
    # every prediction is kept: eval.json is where a user looks up which questions failed
    examples = [
        {"question": prompt_messages(r, None)[-1]["content"], "answer": a, "prediction": p, "contains": c}
        for r, a, p, c in zip(records, answers, predictions, contains)
    ]
    n = len(records)
    return {"exact_match": sum(exact) / n, "contains": sum(contains) / n, "n": n, "examples": examples}


def sampled_contains(model, tokenizer, records: list[dict], samples: int, **options) -> float:
    """Fraction of `samples` seeded sampled replies per question that contain the answer
    (`options`: those of `sampled_hits`).

    Why next to the greedy score: greedy decoding shows one reply, and a small model's first
    token is often a near-tie ("The answer is 4" vs "2 + 2 is a classic example ..."), so a
    tiny change to the weights flips the greedy reply and a greedy probe counts a coin toss as
    forgetting. Averaging over sampled replies measures what the model says across its
    distribution."""
    hits = sampled_hits(model, tokenizer, records, samples, **options)
    return sum(hits) / (len(records) * samples)


def sampled_hits(
    model,
    tokenizer,
    records: list[dict],
    samples: int,
    temperature: float = 0.7,
    system_prompt: str | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 32,
    desc: str = "sampled qa",
) -> list[int]:
    """Per record: how many of `samples` sampled replies contain its answer. Reply j of every
    question uses seed j, so the same model gives the same counts on every call."""
    if not records:
        raise DeltatuneError("sampled replies: no records to evaluate")
    prompts, answers = _questions(tokenizer, records, system_prompt)
    jobs = [(i, seed) for i in sorted(range(len(records)), key=lambda i: len(prompts[i])) for seed in range(samples)]
    hits = [0] * len(records)
    with tqdm(total=len(jobs), desc=desc, unit="reply", leave=False) as bar:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            params = [SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed) for _, seed in chunk]
            done = generate(model, tokenizer, [prompts[i] for i, _ in chunk], params)
            for (i, _), completion in zip(chunk, done):
                hits[i] += answer_contained(completion.text, answers[i])
            bar.update(len(chunk))
    return hits


def _questions(tokenizer, records: list[dict], system_prompt: str | None) -> tuple[list[list[int]], list[str]]:
    """(chat prompt token ids, reference answer) per record."""
    prompts = [chat_prompt_ids(tokenizer, prompt_messages(r, system_prompt)) for r in records]
    return prompts, [reference_answer(r) for r in records]
