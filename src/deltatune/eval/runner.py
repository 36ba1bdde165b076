"""Evaluate a model on a run's splits; the engine behind `deltatune eval` and the recipes.

    deltatune eval runs/latest                  # test/probe/val from the run's config, base too
    deltatune eval runs/latest --data my.jsonl  # a file of your own instead
    deltatune eval smollm2-135m                 # a bare model: builtin orgfacts test + probe

    metrics = evaluate(model, tokenizer, cfg.data, cfg.eval)   # in a recipe, before and after

What each split measures is `eval.metrics` (deltatune.eval.metrics: the table of names and
each split's defaults). Without it: `test` and `probe` are QA splits scored by greedy
generation (exact match / answer contained), `val` is scored by token loss and perplexity,
`forgetting` by KL to the base, and any other split (the `--data` file, an `eval.extra` one)
gets both, or multiple-choice accuracy when its rows have `options` / `choices`
(deltatune.eval.multiple_choice). `eval.extra: {name: file}` adds splits of the user's own.
"""

from __future__ import annotations

import itertools
import re
import time
from pathlib import Path

from deltatune.errors import DeltatuneError

CONFIG_SPLITS = {"test": "test", "probe": "probe", "val": "val", "forgetting": "forgetting_prompts"}
DATA_SPLIT = "data"  # the split name of `deltatune eval --data FILE`
FORGETTING_REPLY_TOKENS = 128  # the base's replies to data.forgetting_prompts
BARE_MODEL_SPLITS = {"test": "builtin:orgfacts/test", "probe": "builtin:general/probe"}
LOSS_BATCH_MAX = 8  # loss batches hold batch x labelled-positions x vocab logits; keep it small


def splits_from_config(cfg_data, cfg_eval=None) -> dict[str, str]:
    """{split name: spec} for the evaluation splits a data config names (unset ones skipped),
    then the `eval.extra` splits of `cfg_eval`."""
    splits = {name: spec for name, key in CONFIG_SPLITS.items() if (spec := getattr(cfg_data, key, None))}
    return {**splits, **dict(getattr(cfg_eval, "extra", None) or {})}


def evaluate(model, tokenizer, cfg_data, cfg_eval, splits: dict[str, str] | None = None) -> dict:
    """{split: metrics} for every split (default: test/probe/val/forgetting from `cfg_data` and
    the `eval.extra` splits), each scored as `eval.metrics` says (`deltatune.eval.metrics`).

    Generation metrics come with "n" and "examples" (every answer); loss metrics with
    "tokens"; multiple choice with "n", "examples" and, when rows have a subject, "by_subject"."""
    splits = splits_from_config(cfg_data, cfg_eval) if splits is None else splits
    results: dict[str, dict] = {}
    for name, spec in splits.items():
        started = time.perf_counter()
        result: dict = {"spec": spec}
        result.update(score_split(model, tokenizer, name, spec, cfg_data, cfg_eval))
        result["seconds"] = round(time.perf_counter() - started, 2)
        results[name] = result
    return results


def score_split(model, tokenizer, name: str, spec: str, cfg_data, cfg_eval) -> dict:
    """The metrics of one split: generation, sampled replies, loss and multiple choice run only
    when one of the split's metrics needs them."""
    from deltatune.data import load_records
    from deltatune.eval.metrics import CHOICE, GENERATION, KL, LOSS, SAMPLED, kinds, split_metrics
    from deltatune.eval.multiple_choice import choice_accuracy, is_choice_file

    if kinds(split_metrics(name, cfg_eval)) == {KL}:
        return forgetting_drift(model, tokenizer, spec, cfg_data, cfg_eval)
    records = load_records(spec)
    if cfg_eval.max_examples:
        records = records[: cfg_eval.max_examples]
    metrics = split_metrics(name, cfg_eval, records)
    needs = kinds(metrics)
    if is_choice_file(records) and needs != {CHOICE}:
        raise DeltatuneError(f"split {name} ({spec}) holds multiple-choice rows (`options` / `choices`); score it "
                             f"with eval.metrics.{name}: [mc_accuracy, mc_accuracy_norm], not {', '.join(metrics)}")
    result: dict = {}
    if CHOICE in needs:
        scores = choice_accuracy(model, tokenizer, records, system_prompt=cfg_data.system_prompt,
                                 batch_size=cfg_eval.batch_size, desc=f"{name} multiple choice")
        result.update({k: v for k, v in scores.items() if k in metrics or k not in ("mc_accuracy", "mc_accuracy_norm")})
    if GENERATION in needs:
        result.update(generation_metrics(model, tokenizer, name, records, metrics, cfg_data, cfg_eval))
    if SAMPLED in needs:
        from deltatune.eval.qa import sampled_contains

        result["sampled_contains"] = sampled_contains(
            model, tokenizer, records, cfg_eval.probe_samples, temperature=cfg_eval.sample_temperature,
            system_prompt=cfg_data.system_prompt, max_new_tokens=cfg_eval.max_new_tokens,
            batch_size=cfg_eval.batch_size, desc=f"{name} sampled")
        result["samples"] = cfg_eval.probe_samples
    if LOSS in needs:
        scores = split_loss(model, tokenizer, records, cfg_data, cfg_eval.batch_size, desc=f"{name} loss")
        result.update({k: v for k, v in scores.items() if k in metrics or k == "tokens"})
    return result


def generation_metrics(model, tokenizer, name: str, records: list[dict], metrics, cfg_data, cfg_eval) -> dict:
    """The generation metrics among `metrics` from one batched greedy pass, with "n" and every
    answer under "examples" (question, reference, prediction, contained or not)."""
    from deltatune.eval.metrics import generation_scores
    from deltatune.eval.qa import qa_accuracy

    answered = qa_accuracy(model, tokenizer, records, system_prompt=cfg_data.system_prompt,
                           max_new_tokens=cfg_eval.max_new_tokens, batch_size=cfg_eval.batch_size, desc=f"{name} qa")
    examples = answered["examples"]
    scores = generation_scores(metrics, [e["prediction"] for e in examples], [e["answer"] for e in examples])
    return {**scores, "n": answered["n"], "examples": examples}


def forgetting_drift(model, tokenizer, spec: str, cfg_data, cfg_eval) -> dict:
    """KL of the model from its base on the base's own replies to the prompts of `spec`
    (deltatune.eval.forgetting); the base is the same model with its method switched off.
    A method that trained the base weights in place has no base left to compare with: the
    split then says so instead of a number."""
    from deltatune.eval.forgetting import heldout_replies, reply_kl
    from deltatune.methods.core import switched_off

    try:
        with switched_off(model):
            replies = heldout_replies(model, tokenizer, spec, cfg_data.system_prompt, FORGETTING_REPLY_TOKENS,
                                      cfg_eval.batch_size)
        if cfg_eval.max_examples:
            replies = replies[: cfg_eval.max_examples]
        return reply_kl(model, tokenizer, replies, cfg_data, batch_size=min(cfg_eval.batch_size, LOSS_BATCH_MAX))
    except DeltatuneError as err:
        if "switched-off" not in str(err):
            raise
        return {"kl": None, "note": f"not measured: {err}"}


def split_loss(model, tokenizer, records: list[dict], cfg_data, batch_size: int, desc: str = "loss") -> dict:
    """Loss/perplexity of records tokenised exactly as training tokenises them."""
    from deltatune.data import build_sft_dataset
    from deltatune.eval.perplexity import loss_and_perplexity

    dataset = build_sft_dataset(records, tokenizer, cfg_data)
    return loss_and_perplexity(model, tokenizer, dataset, batch_size=min(batch_size, LOSS_BATCH_MAX), desc=desc)


def run_eval(
    target: str,
    data: str | None = None,
    before_after: bool = True,
    out: str | Path | None = None,
    max_new_tokens: int | None = None,
    batch_size: int | None = None,
    max_examples: int | None = None,
    probe_samples: int | None = None,
    force: bool = False,
    metrics: list[str] | None = None,
) -> dict:
    """`deltatune eval`: measure a run dir (and its base) or a bare model; write the report.

    A run dir's report goes to a new `RUN/evals/eval-<UTC time>[-<data stem>].json` (a counter
    is added rather than replace a file); `RUN/eval.json` is training's before/after record and
    is left alone. `out` names the file instead, refused if it exists unless `force`.
    For a bare model the report is written only when `out` is given. `metrics` (--metrics)
    replaces `eval.metrics`: the `--data` split's metrics, else those of every split that
    generates answers. Returns the payload."""
    from deltatune.config import DataConfig, EvalConfig
    from deltatune.eval.report import comparison_table, eval_payload, write_eval_json
    from deltatune.models.runs import apply_run_adapter, is_run_dir, load_target

    if force and out is None:
        raise DeltatuneError("--force only goes with --out FILE (a run's evals/ files are never replaced)")
    if out is not None and not force:
        _refuse_existing(Path(out))  # before any model loads: a refusal costs nothing
    started = time.gmtime()
    is_run = is_run_dir(target)
    loaded = load_target(target, with_adapter=not (is_run and before_after))
    cfg = loaded.run_cfg
    cfg_data = cfg.data if cfg is not None else DataConfig(train=data or BARE_MODEL_SPLITS["test"])
    base_eval = cfg.eval if cfg is not None else EvalConfig()
    overrides = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "max_examples": max_examples,
                 "probe_samples": probe_samples}
    cfg_eval = base_eval.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if metrics is not None:
        cfg_eval = _with_metrics(cfg_eval, {DATA_SPLIT: metrics} if data is not None else metrics)
    if data is not None:
        splits = {DATA_SPLIT: data}
    else:
        splits = splits_from_config(cfg_data, cfg_eval) if cfg is not None else dict(BARE_MODEL_SPLITS)
    if not splits:
        raise DeltatuneError(f"{target}: its config names no data.test / data.probe / data.val; pass --data FILE")

    before = None
    if is_run and before_after:
        print(f"evaluating base model {loaded.base_path} ...", flush=True)
        before = evaluate(loaded.model, loaded.tokenizer, cfg_data, cfg_eval, splits)
        apply_run_adapter(loaded.model, target)
    print(f"evaluating {loaded.label} ...", flush=True)
    after = evaluate(loaded.model, loaded.tokenizer, cfg_data, cfg_eval, splits)

    payload = eval_payload(after, before, target=str(target), base_model=loaded.base_path, eval_cfg=cfg_eval)
    print(comparison_table(before, after, tuned_label=loaded.label if cfg is not None else "model"))
    if out is not None:
        out_path = Path(out) if force else _claim(Path(out))
    elif is_run:
        out_path = _claim_new(Path(target) / "evals", _eval_stem(started, data))
    else:
        return payload
    try:
        write_eval_json(out_path, payload)  # replaces only the empty file claimed above (or --force)
    except BaseException:
        if not (out is not None and force):
            out_path.unlink(missing_ok=True)  # our own empty claim, nobody's report
        raise
    print(f"wrote {out_path}")
    return payload


def _with_metrics(cfg_eval, metrics):
    """`cfg_eval` with `metrics` as its eval.metrics, validated as the config would be."""
    from pydantic import ValidationError

    try:
        return type(cfg_eval).model_validate({**cfg_eval.model_dump(), "metrics": metrics})
    except ValidationError as err:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise DeltatuneError(f"--metrics: {problems}") from None


def _eval_stem(started: time.struct_time, data: str | None) -> str:
    """`eval-YYYYmmdd-HHMMSS[-<data>]`: the UTC start time and the --data file's stem."""
    stem = "eval-" + time.strftime("%Y%m%d-%H%M%S", started)
    if data is None:
        return stem
    data = str(data)
    # builtin:orgfacts/test -> orgfacts-test; a path -> its stem; then only filename-safe chars
    name = data.removeprefix("builtin:").replace("/", "-") if data.startswith("builtin:") else Path(data).stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return f"{stem}-{name}" if name else stem


def _refuse_existing(path: Path) -> None:
    if path.exists():
        raise DeltatuneError(f"{path} already exists; pass --force to replace it, or choose another --out")


def _claim(path: Path) -> Path:
    """Create `path` empty, failing if it exists, so no other writer's file is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8"):
            pass
    except FileExistsError:
        _refuse_existing(path)
    return path


def _claim_new(folder: Path, stem: str) -> Path:
    """The first of stem.json, stem-2.json, ... in `folder` not taken yet, claimed (created empty)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = folder / (f"{stem}.json" if n == 1 else f"{stem}-{n}.json")
        try:
            with open(path, "x", encoding="utf-8"):
                return path
        except FileExistsError:
            continue  # an earlier eval (or a concurrent one) has it
