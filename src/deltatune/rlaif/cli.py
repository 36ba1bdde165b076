"""Sub-command `deltatune label`: preference pairs from AI feedback, and a judge's agreement.

    deltatune label PROMPTS.jsonl --model M --judge J --out prefs.jsonl [--k 2] [--rubric FILE] [--resume]
    deltatune label PROMPTS.jsonl --model M --judge-url http://127.0.0.1:8000 [--judge-key KEY]
                    [--judge-model NAME] --out prefs.jsonl
    deltatune label --agreement builtin:orgfacts/prefs_test --judge smollm2-135m [--limit 100]

M and J are run dirs or model names (embedded alias, HF folder, hub id); J == M judges with
the policy itself (loaded once). Exactly one of --judge (a local model) and --judge-url (an
OpenAI-compatible server, e.g. `deltatune serve`) says who judges. The rows
{"prompt", "chosen", "rejected", "judge", "confidence", "_index"} are what `recipe: rm` and
`recipe: dpo` read. An interrupted run keeps its rows; run it again with --resume.
"""

from __future__ import annotations

import argparse
import json
import os


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "label", help="label preference pairs with a judge model or endpoint (RLAIF); --agreement measures a judge",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("prompts", nargs="?", metavar="PROMPTS", help="prompt records: .jsonl/.json/.csv or builtin:...")
    p.add_argument("--model", metavar="M", help="the policy whose replies are compared (run dir or model)")
    p.add_argument("--out", metavar="FILE", help="preference JSONL to write (appended row by row)")
    p.add_argument("--k", type=int, default=2, help="replies sampled per prompt (k > 2: round robin, best vs worst)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted --out, skipping labelled prompts")
    p.add_argument("--max-new-tokens", type=int, default=64, help="reply length cap")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature of the replies")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0, help="prompt i's reply j is sampled with seed + i*k + j")
    p.add_argument("--batch-size", type=int, default=8, help="prompts generated and judged together")
    judge = p.add_argument_group("judge")
    judge.add_argument("--judge", metavar="J", help="local judge: run dir or model name")
    judge.add_argument("--judge-url", metavar="URL", help="endpoint judge: an OpenAI-compatible server")
    judge.add_argument("--judge-key", metavar="KEY", help="its API key (env DELTATUNE_JUDGE_KEY)")
    judge.add_argument("--judge-model", metavar="NAME", help="the served model to ask (default: the server's first)")
    judge.add_argument("--judge-retries", type=int, default=4, help="tries per request on connection errors, 429, 5xx")
    judge.add_argument("--judge-backoff", type=float, default=0.5, help="first retry wait in seconds (doubles)")
    judge.add_argument("--rubric", metavar="FILE", help="judging criteria replacing the built-in "
                       "(helpful, correct, concise)")
    judge.add_argument("--agreement", metavar="PAIRS", help="instead of labelling: the share of known "
                       "(prompt, chosen, rejected) pairs where the judge prefers chosen")
    judge.add_argument("--limit", type=int, help="with --agreement: only the first N pairs")
    p.set_defaults(func=_label)


def _label(args) -> int:
    from deltatune.data import load_records
    from deltatune.errors import DeltatuneError

    if args.agreement:
        if args.prompts or args.model:
            raise DeltatuneError("--agreement PAIRS measures a judge only: drop PROMPTS and --model")
        return _agreement(args, load_records)
    missing = [flag for flag, value in (("PROMPTS", args.prompts), ("--model", args.model), ("--out", args.out))
               if not value]
    if missing:
        raise DeltatuneError(f"deltatune label needs {', '.join(missing)} (or --agreement PAIRS to measure a judge)")
    from pathlib import Path

    from deltatune.rlaif.label import LabelSettings, check_out, label_prompts

    if args.max_new_tokens < 1:
        raise DeltatuneError(f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})")
    settings = LabelSettings(k=args.k, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                             top_p=args.top_p, seed=args.seed, batch_size=args.batch_size)
    records = load_records(args.prompts)  # data errors (file:line) before any model loads
    check_out(Path(args.out), args.resume)
    if args.judge_url:  # ask the server for its model before the policy's (slow) load
        judge = _make_judge(args)
        policy = _load(args.model)
    else:
        policy = _load(args.model)
        judge = _make_judge(args, shared=policy if args.judge == args.model else None)
    report = label_prompts(records, policy.model, policy.tokenizer, judge, args.out, settings, resume=args.resume)
    print(json.dumps({"out": str(report.out), "written": report.written, "already_there": report.resumed,
                      "skipped_identical": len(report.skipped_identical), "judge": judge.name}))
    return 0


def _agreement(args, load_records) -> int:
    from deltatune.errors import DeltatuneError
    from deltatune.rlaif.label import judge_agreement

    if args.limit is not None and args.limit < 1:
        raise DeltatuneError(f"--limit must be >= 1 (got {args.limit})")
    pairs = load_records(args.agreement)[: args.limit]
    result = judge_agreement(_make_judge(args), pairs)
    result.pop("p_chosen")
    print(json.dumps(result))
    return 0


def _load(target: str):
    from deltatune.models.runs import load_target

    return load_target(target)


def _make_judge(args, shared=None):
    """The judge the flags name: a local model (reusing `shared` when it is the policy) or an endpoint."""
    from deltatune.errors import DeltatuneError
    from deltatune.rlaif.judges import read_rubric

    if bool(args.judge) == bool(args.judge_url):
        raise DeltatuneError("give exactly one judge: --judge MODEL (a local model or run dir) "
                             "or --judge-url URL (an OpenAI-compatible server)")
    rubric = read_rubric(args.rubric)
    if args.judge_url:
        from deltatune.rlaif.judge_endpoint import EndpointJudge

        return EndpointJudge(args.judge_url, model=args.judge_model, rubric=rubric,
                             api_key=args.judge_key or os.environ.get("DELTATUNE_JUDGE_KEY") or None,
                             retries=args.judge_retries, backoff=args.judge_backoff)
    from deltatune.rlaif.judge_local import LocalJudge

    loaded = shared if shared is not None else _load(args.judge)
    return LocalJudge(loaded.model, loaded.tokenizer, rubric, name=args.judge, batch_size=args.batch_size)
