"""Select the robust forgetting probe: pool questions the base model answers right every time.

    .venv/bin/python scripts/select_general_probe.py --threads 2              # the real selection
    .venv/bin/python scripts/select_general_probe.py --limit 3 --threads 1 \\
        --out-json /tmp/sel.json --out-module /tmp/sel.py                     # a smoke run

Runs the base model (default the embedded `smollm2-135m`; `--model` takes a local HF folder)
on every candidate of `deltatune.datasets.general_probe.PROBE_POOL` exactly as the evaluation
asks it: chat template with the model's default system prompt (system_prompt=None), 32 new
tokens, the evaluation's `answer_contained` match. Per candidate it records the greedy reply
(`deltatune.eval.qa.qa_accuracy`) and how many of 10 seeded sampled replies at temperature 0.7
contain the answer (`deltatune.eval.qa.sampled_hits`: reply j uses seed j, so the counts are
reproducible).

Rule (`select`): keep a candidate when its greedy reply contains the answer AND at least
`--min-correct` (default 9) of its sampled replies do. Why both: a greedy reply can be right by a
near-tie ("The answer is 4" vs "2 + 2 is a classic example ..." one rounding apart), and a probe
of near-ties counts coin tosses as forgetting; an item the base model gets right in 9 of 10
samples only flips when the weights really moved. `--keep K` caps the probe, taking kinds in
turn (`cap_evenly`) so every kind stays in.

Writes, atomically: `--out-json` (default benchmarks/general_probe_selection.json: every
candidate with its greedy reply, greedy_ok and sampled hits, the settings, kept counts overall
and per kind) and `--out-module` (default src/deltatune/datasets/general_probe_selected.py:
`SELECTED` as (question, answer, kind) triples under a header saying how it was produced),
which `general_probe.ROBUST_PROBE` reads.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON = ROOT / "benchmarks" / "general_probe_selection.json"
OUT_MODULE = ROOT / "src" / "deltatune" / "datasets" / "general_probe_selected.py"
MAX_NEW_TOKENS = 32  # the evaluation's answer length
CHUNK = 16  # questions scored between two progress reports


# ---------------------------------------------------------------------------------------------
# The selection rule (pure: tested on synthetic scores)


def select(candidates: list[dict], min_correct: int) -> list[dict]:
    """Candidates (dicts with `greedy_ok` and `hits`) whose greedy reply is right and whose
    sampled replies are right at least `min_correct` times, in their given order."""
    return [c for c in candidates if c["greedy_ok"] and c["hits"] >= min_correct]


def cap_evenly(kept: list[dict], keep: int | None) -> list[dict]:
    """At most `keep` of `kept`, taking one per kind in turn (kinds in order of first
    appearance, each kind's items in order) so a cap thins every kind instead of dropping the
    last ones; the result keeps `kept`'s order. None keeps everything."""
    if keep is None or keep >= len(kept):
        return list(kept)
    queues: dict[str, list[int]] = {}
    for i, candidate in enumerate(kept):
        queues.setdefault(candidate["kind"], []).append(i)
    chosen: list[int] = []
    while len(chosen) < keep:
        for queue in queues.values():
            if queue and len(chosen) < keep:
                chosen.append(queue.pop(0))
    return [kept[i] for i in sorted(chosen)]


def render_module(selected: list[tuple[str, str, str]], header: list[str], placeholder: bool = False) -> str:
    """The text of `general_probe_selected.py`: `header` as comment lines, then SELECTED."""
    lines = [f"# {line}".rstrip() for line in header]
    lines += ["", "from __future__ import annotations", "",
              f"PLACEHOLDER: bool = {placeholder}  # True until the real selection is run", "",
              "SELECTED: list[tuple[str, str, str]] = ["]
    # json.dumps writes a valid Python string literal, in double quotes like the other modules
    lines += [f"    ({json.dumps(q)}, {json.dumps(a)}, {json.dumps(kind)})," for q, a, kind in selected]
    lines += ["]", ""]
    text = "\n".join(lines)
    compile(text, "general_probe_selected.py", "exec")  # never write a module that cannot import
    return text


# ---------------------------------------------------------------------------------------------
# Scoring with the model


def score_pool(model, tokenizer, pool: list[tuple[str, str, str]], samples: int, temperature: float,
               batch_size: int, min_correct: int) -> list[dict]:
    """Per candidate: question, answer, kind, greedy reply, greedy_ok, sampled hits. Scored
    CHUNK questions at a time so progress shows every few minutes on a CPU (`min_correct`
    only for the running count of robust ones)."""
    from deltatune.eval.qa import qa_accuracy, sampled_hits

    scored: list[dict] = []
    start = time.time()
    for first in range(0, len(pool), CHUNK):
        chunk = pool[first : first + CHUNK]
        records = [{"instruction": q, "input": "", "answer": a} for q, a, _ in chunk]
        greedy = qa_accuracy(model, tokenizer, records, system_prompt=None, max_new_tokens=MAX_NEW_TOKENS,
                             batch_size=batch_size, desc="greedy")["examples"]
        hits = sampled_hits(model, tokenizer, records, samples, temperature=temperature, system_prompt=None,
                            max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size, desc="sampled")
        for (q, a, kind), example, n in zip(chunk, greedy, hits):
            scored.append({"question": q, "answer": a, "kind": kind, "greedy": example["prediction"],
                           "greedy_ok": bool(example["contains"]), "hits": n})
            mark = "ok " if example["contains"] else "BAD"
            print(f"  {mark} {n:2d}/{samples} [{kind}] {q!r} -> {example['prediction'][:70]!r} (want {a!r})", flush=True)
        print(f"[{len(scored)}/{len(pool)}] {time.time() - start:.0f}s: greedy right "
              f"{sum(c['greedy_ok'] for c in scored)}, robust {len(select(scored, min_correct))}", flush=True)
    return scored


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="embedded alias or a local HF model folder")
    parser.add_argument("--min-correct", type=int, default=9, help="sampled replies (of --samples) that must be right")
    parser.add_argument("--samples", type=int, default=10, help="seeded sampled replies per question (seeds 0..N-1)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--keep", type=int, default=None, help="cap the probe at K questions, evenly across kinds")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N candidates (smoke tests)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=40, help="replies generated per batch")
    parser.add_argument("--device", default="auto", help="auto (the GPU when torch sees one), cpu, cuda, ...")
    parser.add_argument("--rescore-from", type=Path, default=None, metavar="JSON",
                        help="reuse the scores saved in JSON (an earlier --out-json) instead of running the "
                        "model: re-apply --min-correct / --keep only")
    parser.add_argument("--out-json", type=Path, default=OUT_JSON)
    parser.add_argument("--out-module", type=Path, default=OUT_MODULE)
    args = parser.parse_args(argv)
    if not 0 <= args.min_correct <= args.samples:
        parser.error(f"--min-correct must be between 0 and --samples ({args.samples})")
    for name in ("samples", "keep", "limit", "threads", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    from deltatune.atomic import write_json_atomic, write_text_atomic
    from deltatune.config import ModelConfig
    from deltatune.datasets.general_probe import PROBE_POOL
    from deltatune.models.loader import load_causal_lm

    args = parse_args(argv)
    command = " ".join(["scripts/select_general_probe.py", *(sys.argv[1:] if argv is None else argv)])
    torch.set_num_threads(args.threads)
    pool = PROBE_POOL[: args.limit] if args.limit else list(PROBE_POOL)
    start = time.time()
    if args.rescore_from is not None:
        saved = json.loads(args.rescore_from.read_text())
        scored, device = saved["candidates"], saved["settings"]["device"]
        command = saved["settings"]["command"] + f" (selection re-applied: {command})"
        pool = [(c["question"], c["answer"], c["kind"]) for c in scored]
        seconds = saved["seconds"]  # of the scoring, which is what took time
    else:
        print(f"loading {args.model} ...", flush=True)
        model, tokenizer = load_causal_lm(ModelConfig(name=args.model, device=args.device))
        device = str(model.device)
        print(f"scoring {len(pool)} candidates: greedy + {args.samples} samples at temperature {args.temperature}, "
              f"{MAX_NEW_TOKENS} new tokens, on {device}", flush=True)
        scored = score_pool(model, tokenizer, pool, args.samples, args.temperature, args.batch_size, args.min_correct)
        seconds = round(time.time() - start)
    robust = select(scored, args.min_correct)
    kept = cap_evenly(robust, args.keep)
    kept_ids = {id(c) for c in kept}
    for candidate in scored:
        candidate["kept"] = id(candidate) in kept_ids

    rule = (f"greedy reply contains the answer AND >= {args.min_correct} of {args.samples} sampled replies do "
            f"(seeds 0..{args.samples - 1}, temperature {args.temperature}, {MAX_NEW_TOKENS} new tokens, "
            f"default system prompt, deltatune.eval.text_metrics.answer_contained)")
    per_kind = dict(Counter(c["kind"] for c in kept))
    summary = {
        "settings": {"command": command, "model": args.model, "date": datetime.date.today().isoformat(),
                     "rule": rule, "min_correct": args.min_correct, "samples": args.samples,
                     "temperature": args.temperature, "max_new_tokens": MAX_NEW_TOKENS, "system_prompt": None,
                     "keep": args.keep, "limit": args.limit, "device": device},
        "pool_size": len(pool),
        "greedy_right": sum(c["greedy_ok"] for c in scored),
        "robust": len(robust),
        "kept": len(kept),
        "kept_per_kind": per_kind,
        "pool_per_kind": dict(Counter(c["kind"] for c in scored)),
        "seconds": seconds,
        "candidates": scored,
    }
    header = [
        "Generated by scripts/select_general_probe.py - do not edit; rerun the script to change it.",
        f"command: {command}",
        f"model:   {args.model}",
        f"date:    {summary['settings']['date']}",
        f"rule:    {rule}",
        f"pool:    {len(pool)} candidates (deltatune.datasets.general_probe.PROBE_POOL"
        + (f", first {args.limit} only)" if args.limit else ")"),
        f"kept:    {len(kept)} ({len(robust)} passed the rule"
        + (f", capped at {args.keep} evenly across kinds)" if args.keep else ")"),
        f"per kind: {', '.join(f'{k} {n}' for k, n in per_kind.items()) or 'none'}",
        f"details: {_shown(args.out_json)} (every candidate's greedy reply and sampled hits)",
    ]
    module = render_module([(c["question"], c["answer"], c["kind"]) for c in kept], header)
    write_json_atomic(args.out_json, summary)
    write_text_atomic(args.out_module, module)
    print(f"\npool {len(pool)}, greedy right {summary['greedy_right']}, robust {len(robust)}, kept {len(kept)} "
          f"({', '.join(f'{k} {n}' for k, n in per_kind.items())}), {summary['seconds']}s")
    print(f"wrote {args.out_json} and {args.out_module}")
    return 0


def _shown(path: Path) -> str:
    """`path` relative to the repository when it lies inside it (headers stay machine-neutral)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
