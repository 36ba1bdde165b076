"""Measure how often a model answers the `arith` problems right: the RL reward's base rate.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/measure_arith_base.py [--split test] [--model smollm2-135m]
        [--max-new-tokens 32] [--batch-size 32] [--limit N] [--show 10]

Each record's prompt is asked as one user turn through the chat template (the template's own
default system prompt), answered greedily (`deltatune.generation.generate`), and scored by the
reward rule `contains_number`: the reference integer appears in the reply as a standalone
number, regex `(?<!\\d)ANSWER(?!\\d)` ("12" counts in "It is 12." and "7 + 5 = 12", not in
"112" or "123"). Prints the rate overall and per operation (told apart by the prompt's
wording) and a few replies.
"""

from __future__ import annotations

import argparse
import re
import time


def contains_number(reply: str, answer: str) -> bool:
    """The reward rule: `answer` (an integer as text) occurs in `reply` with no digit either side."""
    return re.search(rf"(?<!\d){re.escape(answer)}(?!\d)", reply) is not None


def operation_of(prompt: str) -> str:
    """add / sub / mul from the problem's wording (the templates of deltatune.datasets.arith)."""
    words = prompt.lower()
    if " each" in words:
        return "mul"
    if "left" in words or "need" in words:
        return "sub"
    return "add"


def replies(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy replies to each prompt (one user turn), batched by prompt length."""
    from deltatune.generation import SamplingParams, chat_prompt_ids, generate

    ids = [chat_prompt_ids(tokenizer, [{"role": "user", "content": p}]) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [""] * len(ids)
    params = SamplingParams(max_new_tokens=max_new_tokens)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for i, done in zip(chunk, generate(model, tokenizer, [ids[i] for i in chunk], params)):
            out[i] = done.text.strip()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", help="split of builtin:arith (default test)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="only the first N records")
    parser.add_argument("--show", type=int, default=8, help="print this many replies")
    args = parser.parse_args()

    from deltatune.config import ModelConfig
    from deltatune.data import load_records
    from deltatune.models.loader import load_causal_lm

    records = load_records(f"builtin:arith/{args.split}")[: args.limit]
    model, tokenizer = load_causal_lm(ModelConfig(name=args.model), device="cpu")
    started = time.perf_counter()
    texts = replies(model, tokenizer, [r["prompt"] for r in records], args.max_new_tokens, args.batch_size)
    hits = [contains_number(t, r["answer"]) for t, r in zip(texts, records)]
    for op in ("add", "sub", "mul"):
        mine = [h for h, r in zip(hits, records) if operation_of(r["prompt"]) == op]
        if mine:
            print(f"{op}: {sum(mine)}/{len(mine)} = {sum(mine) / len(mine):.1%}")
    for record, text, hit in list(zip(records, texts, hits))[: args.show]:
        print(f"[{'+' if hit else '-'}] {record['answer']:>5} | {text[:100]!r}")
    print(f"base rate on builtin:arith/{args.split}: {sum(hits)}/{len(hits)} = {sum(hits) / len(hits):.1%} "
          f"(greedy, {args.max_new_tokens} new tokens, {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
