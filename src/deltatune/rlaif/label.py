"""Label preference pairs with a judge, and measure a judge on pairs whose answer is known.

    records = load_records("prompts.jsonl")                    # or builtin:...
    report = label_prompts(records, model, tokenizer, judge, "prefs.jsonl", LabelSettings(k=2))
    result = judge_agreement(judge, load_records("builtin:orgfacts/prefs_test"))
    result["agreement"]                                         # share where it prefers chosen

`label_prompts`: for every prompt record ({"prompt": str}, or an alpaca / messages record, whose
question turns `deltatune.data.formats.qa_prompt_messages` gives) sample `k` replies from the
policy model (seeded per prompt: prompt i's reply j uses seed `seed + i * k + j`, so a resumed
run samples exactly what the uninterrupted one would), let the judge compare them, and append

    {"prompt": str, "chosen": str, "rejected": str, "judge": name, "confidence": p, "_index": i}

to the output, one JSON line per prompt, flushed and fsynced after every batch: a crash keeps
what was labelled. `confidence` is the judge's P(chosen is better than rejected) (>= 0.5 for
k = 2). `"_index"` is the prompt's position in the prompts file; `--resume` skips the indices
already in the output (checking each row's prompt text against that index, so a resumed run
over a different file is refused). The `_` marks it private, like `_origin`: preference
readers ignore it. "prompt" is the text of the last user turn (a record's system prompt and
history shape the replies but are not repeated in the row).

k > 2: a round robin. Every pair of distinct replies is compared (k (k-1) / 2 order-swapped
judgements); reply i scores soft wins w_i = sum_j P(i beats j); chosen = the most wins,
rejected = the fewest (ties: the earlier reply), confidence = P(chosen beats rejected) from
their own comparison. Replies are de-duplicated first; a prompt with fewer than two distinct
replies is skipped (counted in the report) — there is nothing to prefer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from deltatune.data.formats import qa_prompt_messages, to_conversation
from deltatune.data.sources import origin
from deltatune.errors import DeltatuneError
from deltatune.generation import SamplingParams, chat_prompt_ids, generate
from deltatune.training.progress import progress_bar, say

INDEX = "_index"  # private key: the prompt's position in the prompts file


@dataclass
class LabelSettings:
    """How replies are sampled and how many prompts go through generation and the judge at once."""

    k: int = 2
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.k < 2:
            raise DeltatuneError(f"--k must be >= 2: a preference needs two replies (got {self.k})")
        if self.batch_size < 1:
            raise DeltatuneError(f"--batch-size must be >= 1 (got {self.batch_size})")
        if self.temperature <= 0:
            raise DeltatuneError(f"--temperature must be > 0: greedy replies to one prompt are all the same "
                                 f"(got {self.temperature})")


@dataclass
class LabelReport:
    out: Path
    written: int = 0  # rows this call appended
    resumed: int = 0  # rows already in the output before this call
    skipped_identical: list[int] = field(default_factory=list)  # prompt indices with < 2 distinct replies


# ---------------------------------------------------------------------------------------------
# Prompt records


def prompt_turns(record: dict) -> tuple[str, list[dict]]:
    """(the prompt text for the row, the chat turns to sample replies from) of one record."""
    if "messages" in record or "instruction" in record:
        if "messages" in record:
            to_conversation(record, "messages")  # validates every turn, naming file:line
        turns = qa_prompt_messages(record)
        if not turns or turns[-1]["role"] != "user":
            raise DeltatuneError(f"{origin(record)}: a prompt's turns must end with a user turn")
        return turns[-1]["content"], turns
    if "prompt" in record:
        text = record["prompt"]
        if not isinstance(text, str) or not text.strip():
            raise DeltatuneError(f"{origin(record)}: field 'prompt' must be a non-empty string")
        return text, [{"role": "user", "content": text}]
    keys = sorted(k for k in record if not k.startswith("_"))
    raise DeltatuneError(
        f"{origin(record)}: not a prompt record (keys {keys}); give 'prompt', or an alpaca "
        f"'instruction', or chat 'messages'"
    )


def preference_pairs(records: list[dict]) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) of preference records, each field a string (else file:line)."""
    triples = []
    for record in records:
        values = []
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(record.get(key), str):
                raise DeltatuneError(f"{origin(record)}: a preference pair needs a string field '{key}'")
            values.append(record[key])
        triples.append(tuple(values))
    return triples


# ---------------------------------------------------------------------------------------------
# The output file: refuse to overwrite, resume from what is there


def check_out(out: Path, resume: bool) -> bool:
    """Whether `out` exists (to resume from); an existing file without `resume` is an error."""
    if not out.exists():
        return False
    if not resume:
        raise DeltatuneError(f"--out {out} already exists: pass --resume to continue labelling into it, "
                             f"or give a new --out path")
    return True


def resume_state(out: Path, resume: bool, prompts: list[str]) -> set[int]:
    """Prompt indices already labelled in `out` (empty for a new file).

    Without `resume` an existing file is an error. A torn last line (a crash mid-write) is cut
    off; any other bad row names out:line."""
    if not check_out(out, resume):
        return set()
    raw = out.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1  # keep every complete line; drop the torn one
        with out.open("r+b") as handle:
            handle.truncate(cut)
        say(f"label: dropped an incomplete last line of {out} (an interrupted write)")
    done: set[int] = set()
    for lineno, line in enumerate(out.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{out}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DeltatuneError(f"{where}: malformed JSON line ({err.msg}); fix or remove it, then --resume") from None
        index = row.get(INDEX) if isinstance(row, dict) else None
        if not isinstance(index, int) or not 0 <= index < len(prompts):
            raise DeltatuneError(f"{where}: no valid '{INDEX}' for the {len(prompts)} prompts; "
                                 f"was it written by `deltatune label` from this prompts file?")
        if row.get("prompt") != prompts[index]:
            raise DeltatuneError(f"{where}: prompt {index} differs from the prompts file's; "
                                 f"this --out was labelled from another file: give a new --out path")
        done.add(index)
    return done


def append_rows(handle, rows: list[dict]) -> None:
    """Append rows and make them durable before going on (flush + fsync)."""
    for row in rows:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


# ---------------------------------------------------------------------------------------------
# Sampling and choosing


def sample_replies(model, tokenizer, turns: list[list[dict]], indices: list[int],
                   settings: LabelSettings) -> list[list[str]]:
    """`settings.k` sampled replies per prompt, all prompts of the batch in one generate call."""
    k = settings.k
    prompt_ids, params = [], []
    for turn, index in zip(turns, indices):
        ids = chat_prompt_ids(tokenizer, turn)
        for j in range(k):
            prompt_ids.append(ids)
            params.append(SamplingParams(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                         top_p=settings.top_p, seed=settings.seed + index * k + j))
    done = generate(model, tokenizer, prompt_ids, params)
    texts = [c.text.strip() for c in done]
    return [texts[i * k : (i + 1) * k] for i in range(len(turns))]


def round_robin(n: int) -> list[tuple[int, int]]:
    """Every unordered pair (i, j), i < j, of n replies."""
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def best_and_worst(n: int, pairs: list[tuple[int, int]], p_first: list[float]) -> tuple[int, int, float]:
    """(chosen, rejected, P(chosen beats rejected)) from round-robin judgements, where
    p_first[m] = P(pairs[m][0] beats pairs[m][1])."""
    wins = [0.0] * n
    beats = {}
    for (i, j), p in zip(pairs, p_first):
        wins[i] += p
        wins[j] += 1.0 - p
        beats[(i, j)], beats[(j, i)] = p, 1.0 - p
    best = max(range(n), key=lambda i: (wins[i], -i))  # most wins; ties -> earlier reply
    worst = min((i for i in range(n) if i != best), key=lambda i: (wins[i], i))
    return best, worst, beats[(best, worst)]


def distinct(replies: list[str]) -> list[str]:
    """The replies without repeats, first occurrences in order."""
    return list(dict.fromkeys(replies))


def judge_batch(judge, prompts: list[str], replies: list[list[str]]) -> list[tuple[str, str, float] | None]:
    """(chosen, rejected, confidence) per prompt, or None when its replies are all the same;
    every comparison of the batch goes to the judge in one `prefer_many` call."""
    triples, spans = [], []
    for prompt, options in zip(prompts, replies):
        pairs = round_robin(len(options))
        spans.append((len(triples), pairs))
        triples += [(prompt, options[i], options[j]) for i, j in pairs]
    probs = judge.prefer_many(triples) if triples else []
    picked = []
    for options, (start, pairs) in zip(replies, spans):
        if len(options) < 2:
            picked.append(None)
            continue
        best, worst, p = best_and_worst(len(options), pairs, probs[start : start + len(pairs)])
        picked.append((options[best], options[worst], p))
    return picked


# ---------------------------------------------------------------------------------------------
# The commands' work


def label_prompts(records: list[dict], model, tokenizer, judge, out: str | Path,
                  settings: LabelSettings | None = None, resume: bool = False) -> LabelReport:
    """Label every prompt record into `out` (see the module docstring); returns what was done."""
    settings = settings or LabelSettings()
    parsed = [prompt_turns(r) for r in records]  # every record checked before anything is written
    prompts = [text for text, _ in parsed]
    out = Path(out)
    done = resume_state(out, resume, prompts)
    report = LabelReport(out=out, resumed=len(done))
    todo = [i for i in range(len(records)) if i not in done]
    if not todo:
        say(f"label: all {len(records)} prompts are already in {out}")
        return report
    out.parent.mkdir(parents=True, exist_ok=True)
    bar = progress_bar(len(records), initial=len(records) - len(todo), desc="label")
    try:
        with out.open("a", encoding="utf-8") as handle:
            for start in range(0, len(todo), settings.batch_size):
                batch = todo[start : start + settings.batch_size]
                replies = sample_replies(model, tokenizer, [parsed[i][1] for i in batch], batch, settings)
                try:
                    picked = judge_batch(judge, [prompts[i] for i in batch], [distinct(r) for r in replies])
                except DeltatuneError as err:
                    raise DeltatuneError(
                        f"{err}. The {report.resumed + report.written} rows labelled so far are kept in {out}; "
                        f"run the same command with --resume to continue from there"
                    ) from None
                rows = []
                for index, choice in zip(batch, picked):
                    if choice is None:
                        report.skipped_identical.append(index)
                        continue
                    chosen, rejected, p = choice
                    rows.append({"prompt": prompts[index], "chosen": chosen, "rejected": rejected,
                                 "judge": judge.name, "confidence": round(float(p), 6), INDEX: index})
                append_rows(handle, rows)
                report.written += len(rows)
                bar.update(len(batch))
    finally:
        bar.close()
    if report.skipped_identical:
        say(f"label: {len(report.skipped_identical)} prompts skipped: all {settings.k} replies were identical "
            f"(indices {report.skipped_identical[:10]}{' ...' if len(report.skipped_identical) > 10 else ''})")
    return report


def judge_agreement(judge, pairs: list[dict] | list[tuple[str, str, str]], batch_size: int = 32) -> dict:
    """How often the judge prefers the known-better reply of each (prompt, chosen, rejected).

    Returns {"pairs", "agreement": share with P(chosen better) > 0.5, "ties": share at exactly
    0.5, "agreement_ties_half": agreement + ties / 2 (a tie as a coin flip), "mean_p_chosen",
    "p_chosen": per pair}. Chosen is shown as A and B equally often, by the order swap."""
    triples = preference_pairs(pairs) if pairs and isinstance(pairs[0], dict) else list(pairs)
    if not triples:
        raise DeltatuneError("judge agreement: no pairs to judge")
    probs: list[float] = []
    bar = progress_bar(len(triples), desc="agreement")
    try:
        for start in range(0, len(triples), batch_size):
            chunk = triples[start : start + batch_size]
            probs += judge.prefer_many(chunk)
            bar.update(len(chunk))
    finally:
        bar.close()
    n = len(probs)
    wins = sum(p > 0.5 for p in probs) / n
    ties = sum(p == 0.5 for p in probs) / n
    return {"judge": judge.name, "pairs": n, "agreement": wins, "ties": ties,
            "agreement_ties_half": wins + ties / 2, "mean_p_chosen": sum(probs) / n, "p_chosen": probs}
