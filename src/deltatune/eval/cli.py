"""Sub-commands `deltatune eval` and `deltatune generate`.

    deltatune eval runs/latest [--data FILE] [--no-base] [--max-new-tokens N] [--batch-size N] [--out FILE [--force]]
    deltatune eval runs/latest --metrics exact_match,token_f1,rouge_l,bleu,chrf
    deltatune eval runs/latest --data mmlu.jsonl              # multiple choice: mc_accuracy(_norm)
    deltatune eval runs/latest --control [--seeds 3]     # the forgetting measures' noise floor
    deltatune generate runs/latest "Who founded Acme?" [--temperature 0.7 --top-p 0.9 --seed 1]
    deltatune generate smollm2-135m "Once upon a time" --raw
    deltatune generate runs/cls_lora "where is my parcel?"    # a recipe: cls run: label + probability

TARGET is a run dir (base + its trained adapter) or a model (embedded alias, HF folder, hub id).
Each eval of a run dir writes a new RUN_DIR/evals/eval-<UTC time>[-<data>].json; the run's own
RUN_DIR/eval.json (training's before/after record) is left as training wrote it.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    ev = subparsers.add_parser(
        "eval",
        help="measure a run (before vs after) or a model; writes RUN_DIR/evals/eval-<time>.json",
        description="Measure a run dir (base and tuned) or a model. For a run dir every eval writes a "
        "new RUN_DIR/evals/eval-<UTC YYYYmmdd-HHMMSS>[-<data file stem>].json; RUN_DIR/eval.json "
        "is training's own record and is left alone. A model's report is written only with --out.",
    )
    ev.add_argument("target", metavar="TARGET", help="run dir or model name/folder")
    ev.add_argument("--data", metavar="FILE", help="evaluate this file (or builtin:...) instead of the run's splits")
    ev.add_argument("--no-base", dest="before_after", action="store_false", help="skip measuring the base model")
    ev.add_argument("--max-new-tokens", type=int, help="answer length cap for QA generation")
    ev.add_argument("--batch-size", type=int, help="prompts generated together")
    ev.add_argument("--max-examples", type=int, help="evaluate only the first N records per split")
    ev.add_argument("--probe-samples", type=int, metavar="N",
                    help="also score the probe over N seeded sampled replies per question (0: off)")
    ev.add_argument("--metrics", metavar="A,B", type=_metric_list,
                    help="what to report, replacing eval.metrics: for the --data file, else for every split that "
                    "generates answers (names: deltatune.eval.metrics, e.g. exact_match,contains,token_f1,"
                    "rouge_l,bleu,chrf,loss,perplexity,mc_accuracy,mc_accuracy_norm)")
    ev.add_argument("--out", metavar="FILE",
                    help="write the report to FILE instead (an existing FILE is refused unless --force)")
    ev.add_argument("--force", action="store_true", help="with --out: replace FILE if it exists")
    ev.add_argument("--control", action="store_true",
                    help="run the noise-floor control of a run dir: the same recipe and steps on the base "
                    "model's own replies (nothing to learn); prints each forgetting measure's floor beside "
                    "the run's (RUN_DIR/control/control.json)")
    ev.add_argument("--seeds", type=int, default=1, metavar="N", help="with --control: control seeds (default 1)")
    ev.set_defaults(func=_eval)

    gen = subparsers.add_parser("generate", help="complete one prompt with a run or a model (a classifier "
                                "run prints the predicted label and its probability)")
    gen.add_argument("target", metavar="TARGET", help="run dir or model name/folder")
    gen.add_argument("prompt", metavar="PROMPT")
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    gen.add_argument("--system", metavar="TEXT", help="system message (chat mode)")
    gen.add_argument("--raw", action="store_true", help="feed PROMPT as plain text, no chat template")
    gen.set_defaults(func=_generate)


def _eval(args) -> int:
    from deltatune.eval.runner import run_eval

    _check_positive(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, max_examples=args.max_examples,
                    seeds=args.seeds)
    if args.control:
        return _control(args)
    from deltatune.classify.predictor import is_cls_run

    if is_cls_run(args.target):  # a classifier: accuracy, macro-F1, majority rate (deltatune.classify.evaluate)
        from deltatune.classify.evaluate import run_cls_eval

        run_cls_eval(args.target, data=args.data, out=args.out, force=args.force, max_examples=args.max_examples)
        return 0
    if args.probe_samples is not None and args.probe_samples < 0:
        from deltatune.errors import DeltatuneError

        raise DeltatuneError(f"--probe-samples must be >= 0 (got {args.probe_samples})")
    run_eval(
        args.target,
        data=args.data,
        before_after=args.before_after,
        out=args.out,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        max_examples=args.max_examples,
        probe_samples=args.probe_samples,
        force=args.force,
        metrics=args.metrics,
    )
    return 0


def _control(args) -> int:
    from deltatune.errors import DeltatuneError
    from deltatune.eval.control import run_control
    from deltatune.models.runs import is_run_dir

    if not is_run_dir(args.target):
        raise DeltatuneError(f"--control needs a training run dir; {args.target} has no config.yaml")
    if args.data or args.out or args.metrics:
        raise DeltatuneError("--control measures the run's own splits; drop --data / --out / --metrics")
    run_control(args.target, seeds=args.seeds)
    return 0


def _generate(args) -> int:
    from deltatune.classify.predictor import is_cls_run
    from deltatune.errors import DeltatuneError
    from deltatune.generation import SamplingParams, chat_prompt_ids, generate
    from deltatune.models.runs import load_target

    if is_cls_run(args.target):
        return _classify(args)

    params = SamplingParams(args.max_new_tokens, args.temperature, args.top_p, args.stop, args.seed)
    loaded = load_target(args.target)
    tokenizer = loaded.tokenizer
    if args.raw:
        if args.system:
            raise DeltatuneError("--system needs chat mode; drop --raw or drop --system")
        prompt_ids = tokenizer(args.prompt)["input_ids"]
    else:
        system = [{"role": "system", "content": args.system}] if args.system else []
        prompt_ids = chat_prompt_ids(tokenizer, system + [{"role": "user", "content": args.prompt}])

    def stream(_index: int, delta: str) -> None:
        sys.stdout.write(delta)
        sys.stdout.flush()

    [done] = generate(loaded.model, tokenizer, [prompt_ids], params, on_token=stream)
    sys.stdout.write("\n")
    print(
        f"[{done.finish_reason}; {done.prompt_tokens} prompt + {done.completion_tokens} completion tokens]",
        file=sys.stderr,
    )
    return 0


def _metric_list(text: str) -> list[str]:
    """`a,b` -> ["a", "b"]; the names are checked with the config (deltatune.eval.metrics)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _classify(args) -> int:
    """A classifier run: 'LABEL<TAB>PROBABILITY' on stdout, the next most probable labels on stderr."""
    from deltatune.classify.predictor import Classifier

    [pred] = Classifier.load(args.target).predict([args.prompt])
    print(f"{pred.label}\t{pred.score:.4f}")
    ranked = sorted(pred.scores.items(), key=lambda kv: -kv[1])[1:4]
    print("[next: " + ", ".join(f"{name} {p:.4f}" for name, p in ranked) + f"; {pred.tokens} tokens]",
          file=sys.stderr)
    return 0


def _check_positive(**values) -> None:
    from deltatune.errors import DeltatuneError

    for name, value in values.items():
        if value is not None and value < 1:
            raise DeltatuneError(f"--{name.replace('_', '-')} must be >= 1 (got {value})")
