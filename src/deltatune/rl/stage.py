"""The set-up and wrap-up steps `recipe: ppo` and `recipe: grpo` share (the loop is rl/loop.py).

    setup = prepare_stage(cfg, resume)      # model, prompts, reward (checked before sampling), method, run dir
    ... the recipe adds its value head / algorithm and calls rl.loop.run_rl ...
    finish_stage(setup, cfg, result)        # adapter, held-out reward before / after, eval.json, rl.png
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deltatune.data import load_records
from deltatune.errors import DeltatuneError
from deltatune.eval.report import write_eval_json
from deltatune.methods.core import apply_method, save_adapter
from deltatune.methods.registry import get_method
from deltatune.recipes import common
from deltatune.rl.evaluate import held_out_reward
from deltatune.rl.plot import plot_rl
from deltatune.rl.prompts import prompt_turns
from deltatune.rl.rewards import build_reward
from deltatune.training.progress import say
from deltatune.training.reference import Reference
from deltatune.training.rundir import prepare_run_dir


@dataclass
class Stage:
    model: object
    tokenizer: object
    installed: object
    prompts: list[dict]
    test: list[dict] | None
    reward: object
    reference: Reference
    run_dir: Path
    resume_from: Path | None
    before: dict | None


def _load_prompts(cfg) -> tuple[list[dict], list[dict] | None]:
    prompts = load_records(cfg.data.train)
    for record in prompts:
        prompt_turns(record)  # a row without a prompt fails here, naming file:line
    test = load_records(cfg.data.test) if cfg.data.test else None
    if not prompts:
        raise DeltatuneError(f"data.train {cfg.data.train}: no prompts")
    return prompts, test


def prepare_stage(cfg, resume: bool) -> Stage:
    common.seed_everything(cfg.train.seed)
    if common.setup_process(cfg).world > 1:
        raise DeltatuneError(f"recipe {cfg.recipe} runs in one process (its rollouts are not split over "
                             f"processes yet): start it without torchrun")
    reward = build_reward(cfg.rl.reward)  # a bad reward fails before the model loads
    model, tokenizer = common.load_for_training(cfg)
    prompts, test = _load_prompts(cfg)
    say(f"prompts: {len(prompts)} (test: {len(test) if test else 0}); reward: {cfg.rl.reward}")
    common.seed_everything(cfg.train.seed)
    installed = apply_method(model, cfg.method, tokenizer=tokenizer)
    reference = Reference.for_method(model, get_method(cfg.method))
    run_dir = prepare_run_dir(cfg, resume)
    resume_from = common.resume_point(run_dir, resume)
    before = common.read_before(run_dir) if resume_from else None
    if test and cfg.eval.before_after and before is None:
        say("measuring the base model on the held-out prompts ...")
        before = {"test": common.measure_base(model, lambda: held_out_reward(model, tokenizer, test, reward, cfg))}
        write_eval_json(run_dir / "eval.json", {"before": before})
    common.print_parameter_counts(model)
    return Stage(model, tokenizer, installed, prompts, test, reward, reference, run_dir, resume_from, before)


def finish_stage(stage: Stage, cfg, result, extra: dict | None = None) -> Path:
    save_adapter(stage.model, cfg.method, stage.run_dir / "adapter", common.base_model_path(cfg))
    after = {"test": held_out_reward(stage.model, stage.tokenizer, stage.test, stage.reward, cfg)} if stage.test else {}
    try:
        plot_rl(stage.run_dir / "metrics.jsonl", stage.run_dir / "rl.png")
    except Exception as err:  # a plot must never fail a finished run
        say(f"(rl plot skipped: {err})")
    body = {"before": stage.before, "after": after, "steps": result.state.step, "rl": cfg.rl.model_dump(), **(extra or {})}
    write_eval_json(stage.run_dir / "eval.json", body)
    common.write_run_page(stage.run_dir)
    if stage.before and after:
        say(f"held-out mean reward: {stage.before['test']['mean_reward']:.4f} -> {after['test']['mean_reward']:.4f}")
    print(f"run dir: {stage.run_dir}")
    return stage.run_dir
