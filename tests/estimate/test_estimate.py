"""`deltatune estimate` on the tiny Llama: counts against the real installed methods, byte counts
against hand computations, the probe's extrapolation against the real model, the CLI's JSON,
the advice under a too-small budget, the loader's error, and the prediction against a real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM

from deltatune.config import validate_config
from deltatune.errors import DeltatuneError
from deltatune.estimate import estimate_run
from deltatune.estimate.batches import plan_batches, training_examples
from deltatune.estimate.cli import parse_memory
from deltatune.estimate.memory import ALLOCATOR_FIXED, ALLOCATOR_SHARE, memory_estimate
from deltatune.methods.core import apply_method, count_parameters
from deltatune.methods.registry import METHODS


def alpaca_records(n: int, seed: int = 0) -> list[dict]:
    """Short QA records of varied lengths (what the length-bucketed batches are made of)."""
    import random

    rng = random.Random(seed)
    words = ["red", "blue", "green", "amber", "violet", "teal"]
    return [{"instruction": f"What colour is door {i}? " + " ".join(rng.choice(words) for _ in range(rng.randint(0, 8))),
             "input": "", "output": f"Door {i} is {rng.choice(words)}."} for i in range(n)]


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)

# the tiny Llama of tests/conftest.py: 2 blocks, hidden 64, MLP 128, 4 heads, 2 KV heads, tied head
LAYERS, H, FFN, KV, R = 2, 64, 128, 32, 4
BASELINE = 250 * 2**20


@pytest.fixture
def home(tmp_path, monkeypatch, tiny_llama_dir):
    """A fresh $DELTATUNE_HOME (the probe cache) and a fixed process baseline (no subprocess)."""
    monkeypatch.setenv("DELTATUNE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("deltatune.estimate.estimator.process_baseline_bytes", lambda: (BASELINE, "fixed by the test"))
    return tmp_path / "home"


@pytest.fixture
def config(tmp_path, tiny_llama_dir):
    """config(method=..., train=..., **sections) -> Config on the tiny model (batches of 4)."""
    train_file = write_jsonl(tmp_path / "train.jsonl", alpaca_records(24, seed=0))
    val_file = write_jsonl(tmp_path / "val.jsonl", alpaca_records(6, seed=1))

    def make(method=None, train=None, data=None, **sections):
        return validate_config({
            "recipe": "sft", "model": {"name": str(tiny_llama_dir)},
            "method": method or {"name": "lora", "r": R, "alpha": 8, "targets": "all-linear"},
            "data": {"train": train_file, "val": val_file, "max_length": 64, **(data or {})},
            "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 6, "seed": 0, "num_threads": 1, **(train or {})},
            "eval": {"before_after": False}, "output": {"dir": str(tmp_path / "run")}, **sections})

    return make


def _real_count(tiny_llama_dir, cfg) -> tuple[int, int]:
    spec = METHODS[cfg.method.name]
    if spec.load_base is not None:
        model = spec.load_base(cfg.model, device="cpu", dtype="float32", method_cfg=cfg.method)[0]
    else:
        model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    apply_method(model, cfg.method)
    return count_parameters(model)


@pytest.mark.parametrize("method", [
    {"name": "lora", "r": R, "alpha": 8, "targets": "all-linear"},
    {"name": "full"},
    {"name": "freeze", "train_last_n_blocks": 1, "train_norm": True},
    {"name": "qlora", "r": R, "alpha": 8, "targets": "all-linear", "bits": 4},
])
def test_trainable_count_equals_the_installed_method(home, config, tiny_llama_dir, method):
    if method["name"] == "qlora":
        pytest.importorskip("bitsandbytes")
    cfg = config(method=method)
    params = estimate_run(cfg).as_dict()["parameters"]
    assert (params["trainable"], params["total"]) == _real_count(tiny_llama_dir, cfg)
    # qlora cannot be installed on the meta device: its counts come from the 2- and 8-layer copies
    assert params["source"] == ("probe" if method["name"] == "qlora" else "meta")


def test_weight_gradient_optimiser_bytes_by_hand(home, config):
    est = estimate_run(config())
    base = 49152 * H + LAYERS * (2 * H * H + 2 * H * KV + 3 * H * FFN + 2 * H) + H  # tied head counted once
    lora = LAYERS * R * ((H + H) + 2 * (H + KV) + (H + H) + 2 * (H + FFN) + (FFN + H))
    parts = est.as_dict()["breakdown"]
    assert est.as_dict()["parameters"] == {"trainable": lora, "total": base + lora, "source": "meta"}
    # fp32 base stored as fp32: the mapped safetensors file (its bytes) + the method's fp32 tensors
    assert parts["weights"] == 4 * base + 4 * lora
    assert parts["gradients"] == 4 * lora
    assert parts["optimizer"] == 8 * lora  # AdamW: exp_avg + exp_avg_sq
    assert parts["baseline"] == BASELINE
    assert parts["allocator"] == int(ALLOCATOR_FIXED["cpu"] + ALLOCATOR_SHARE["cpu"] * parts["activations"])


def test_activations_extrapolate_to_the_real_model(home, config, tiny_llama_dir):
    """The probe's 2- and 8-layer copies, extrapolated to 2 blocks, give exactly what the real
    2-block model saves for backward on the peak batch; the rest is dominated by the fp32
    log-softmax over the labelled positions (N x V x 4 bytes), which is hand-checked."""
    from deltatune.estimate.estimator import estimate_variant, prepare
    from deltatune.estimate.probe import saved_for_backward, training_path

    cfg = config(method={"name": "full"})
    ctx = prepare(cfg)
    variant = estimate_variant(ctx, cfg)
    peak = variant.plan.peak
    collate_fn, loss_fn = training_path(cfg.train)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    apply_method(model, cfg.method)
    model.train()
    real = saved_for_backward(model, collate_fn(variant.plan.peak_examples, 0), loss_fn, "float32")
    probe = variant.probe
    extrapolated = probe.saved_rest + LAYERS * probe.saved_block
    assert extrapolated == pytest.approx(real, rel=1e-6)
    log_softmax = peak.labelled * 49152 * 4
    assert log_softmax <= probe.saved_rest <= log_softmax + 4 * peak.cells * (H + 49152 // 64)
    head_backward = 2 * peak.labelled * 49152 * 4
    assert variant.memory.activations == int(real + head_backward)


def test_peak_batch_is_the_samplers_largest(home, config):
    from deltatune.data import BucketedBatches
    from deltatune.models.loader import load_tokenizer

    cfg = config(train={"max_steps": 3})
    tokenizer = load_tokenizer(cfg.model.name)
    dataset, _ = training_examples(cfg, tokenizer)
    plan = plan_batches(cfg, dataset)
    sampler = BucketedBatches(dataset, 4, seed=0)
    first = sampler.batches(0)[:3]  # 3 steps x grad_accum 1: only these micro-batches are trained on
    cells = [len(b) * max(sampler.lengths[i] for i in b) for b in first]
    assert plan.peak.cells == max(cells)
    assert plan.budget.total_steps == 3 and plan.micro_batches == 3


def test_memory_rule_by_hand():
    """peak = baseline + weights + optimiser + max(activations + allocator (+ held grads), gradients)."""
    mib = 2**20
    low = memory_estimate(baseline=100 * mib, weights=500 * mib, trainable=1000, activations=200 * mib,
                          device_type="cpu", grad_accum=1)
    alloc = ALLOCATOR_FIXED["cpu"] + ALLOCATOR_SHARE["cpu"] * 200 * mib
    assert low.peak == int(100 * mib + 500 * mib + 8000 + 200 * mib + alloc)
    big = memory_estimate(baseline=0, weights=0, trainable=10**9, activations=mib, device_type="cpu", grad_accum=1)
    assert big.train_peak == 8 * 10**9 + 4 * 10**9  # gradients outgrow the activations they replace in backward
    assert big.limited_by == "optimiser step" and big.peak == big.train_peak + ALLOCATOR_FIXED["cpu"]
    held = memory_estimate(baseline=0, weights=0, trainable=10**6, activations=mib, device_type="cpu", grad_accum=2)
    assert held.train_peak == int(8 * 10**6 + mib + ALLOCATOR_FIXED["cpu"] + ALLOCATOR_SHARE["cpu"] * mib + 4 * 10**6)


def test_json_output_keys(home, config, tmp_path, capsys):
    from deltatune.cli import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config().model_dump(mode="json")))
    assert main(["estimate", str(path), "train.batch_size=2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"peak_memory_bytes", "step_seconds", "breakdown", "total_steps", "total_minutes", "parameters",
            "batches", "suggestions"} <= set(out)
    assert set(out["breakdown"]) == {"baseline", "weights", "gradients", "optimizer", "activations", "allocator",
                                     "replay"}
    assert out["batches"]["batch_size"] == 2 and out["total_steps"] == 6
    assert out["peak_memory_bytes"] >= sum(out["breakdown"][k] for k in ("baseline", "weights", "optimizer"))
    assert out["step_seconds"] > 0


def test_too_small_memory_lists_changes_with_their_estimates(home, config, tmp_path, capsys):
    from deltatune.cli import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config().model_dump(mode="json")))
    assert main(["estimate", str(path), "--memory", "64MiB"]) == 0
    out = capsys.readouterr().out
    assert "does not fit" in out
    assert "train.batch_size=2 train.grad_accum=2" in out and "train.batch_size=1 train.grad_accum=4" in out
    assert "method.targets=[k_proj,o_proj,q_proj,v_proj]" in out
    assert main(["estimate", str(path), "--memory", "64MiB", "--json"]) == 0
    advice = json.loads(capsys.readouterr().out)["suggestions"]
    smaller = {s["change"]: s["peak_memory_bytes"] for s in advice if s["change"].startswith("train.batch_size")}
    assert smaller["train.batch_size=1 train.grad_accum=4"] < smaller["train.batch_size=2 train.grad_accum=2"]
    assert all(not s["fits"] for s in advice)  # 64 MiB is below the baseline alone


def test_checkpointing_estimate_is_smaller(home, config):
    if "gradient_checkpointing" not in type(config().train).model_fields:
        pytest.skip("this tree has no train.gradient_checkpointing")
    plain = estimate_run(config(method={"name": "full"})).as_dict()
    checkpointed = estimate_run(config(method={"name": "full"}, train={"gradient_checkpointing": True})).as_dict()
    assert checkpointed["breakdown"]["activations"] < plain["breakdown"]["activations"]
    assert checkpointed["step_seconds"] > plain["step_seconds"] * 0.9  # one more forward, never much less


def test_missing_model_path_is_the_loaders_error(home, config, tmp_path, capsys):
    from deltatune.cli import main

    raw = config().model_dump(mode="json")
    raw["model"]["name"] = str(tmp_path / "no-such-model")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["estimate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "no-such-model" in err and "Traceback" not in err


def test_memory_sizes_parse():
    assert parse_memory("8GiB") == 8 * 2**30
    assert parse_memory("6 GB") == 6 * 10**9
    assert parse_memory("3000MiB") == 3000 * 2**20
    assert parse_memory("2.5g") == int(2.5 * 10**9)
    with pytest.raises(DeltatuneError, match="--memory"):
        parse_memory("lots")


def test_replay_standins_join_the_training_set(home, config, tmp_path):
    from deltatune.models.loader import load_tokenizer
    from deltatune.replay.sizing import replay_count

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"instruction": f"Say something about {c}."}
                                                       for c in ("tea", "rain", "maps", "owls", "salt") * 4])
    cfg = config(data={"replay": prompts, "replay_max_new_tokens": 40, "replay_answer_tokens": 12,
                       "replay_topk": 4, "replay_ratio": 0.5})
    dataset, notes = training_examples(cfg, load_tokenizer(cfg.model.name))
    replay = dataset.examples[24:]
    assert len(replay) == replay_count(24, 20, 0.5) == dataset.stats["replay"]
    assert all(sum(1 for label in ex["labels"] if label != -100) == 12 for ex in replay)  # cut to 12
    assert all(len(t) == 4 for ex in replay for t in ex["teacher_ids"] if t)
    assert notes and "stand-ins" in notes[0] and "upper bound" in notes[0]
    est = estimate_run(cfg).as_dict()
    assert est["batches"]["replay_examples"] == len(replay) and est["breakdown"]["replay"] > 0


def test_train_prints_the_estimate_and_never_fails_on_it(config, monkeypatch, capsys):
    from deltatune.recipes.cli import _print_estimate

    def broken(cfg):
        raise RuntimeError("no estimate today")

    monkeypatch.setattr("deltatune.estimate.estimate_run", broken)
    _print_estimate(config())
    assert "estimate: skipped (RuntimeError: no estimate today)" in capsys.readouterr().out


def test_predicted_peak_is_near_a_real_runs(config, tmp_path, tiny_llama_dir):
    """A real `deltatune train` in a fresh process (as a user runs it): the line it prints first
    is the estimate, and its measured training peak (eval.json) is within a generous factor of it.
    The tiny model's peak is mostly the process baseline, so this checks the parts add up, not
    the ±25% on SmolLM2 (scripts/measure_estimate.py)."""
    env_home = tmp_path / "home"
    cfg = config(method={"name": "full"}, train={"max_steps": 4})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**__import__("os").environ, "DELTATUNE_HOME": str(env_home), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "deltatune", "train", str(path)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "estimate: peak memory ~" in done.stdout
    resources = json.loads((Path(cfg.output.dir) / "eval.json").read_text())["resources"]
    measured = (resources.get("train_peak_rss_mib") or resources["peak_rss_mib"]) * 2**20
    predicted = estimate_run(cfg).peak_memory_bytes  # same home: the probe and baseline come from the cache
    assert 0.5 < predicted / measured < 2.0, (predicted / 2**20, measured / 2**20)


def test_cached_replay_answers_are_used_when_unambiguous(home, config, tmp_path):
    """Answers in $DELTATUNE_HOME/replay for exactly these prompts give the real lengths (and no
    answering pass); a second, different answer set for the same prompts makes it ambiguous."""
    from deltatune.models.loader import load_tokenizer

    prompts = [f"Say something about {c}." for c in ("tea", "rain", "maps", "owls", "salt", "glue")]
    spec = write_jsonl(tmp_path / "prompts.jsonl", [{"instruction": p} for p in prompts])
    answers = [" ".join(["word"] * (3 + 2 * i)) for i in range(len(prompts) - 1)]  # the last one unfinished
    cached = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]}
              for p, a in zip(prompts, answers)]
    (home / "replay").mkdir(parents=True)
    write_jsonl(home / "replay" / "aaa.jsonl", cached)
    cfg = config(data={"replay": spec, "replay_max_new_tokens": 40, "replay_ratio": None})
    tokenizer = load_tokenizer(cfg.model.name)
    dataset, notes = training_examples(cfg, tokenizer)
    replay = dataset.examples[24:]
    assert "5 cached answers" in notes[0] and not dataset.stats["replay_unanswered"]
    labelled = [sum(1 for label in ex["labels"] if label != -100) for ex in replay]
    expected = [len(tokenizer(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers]  # + the end token
    assert labelled == expected
    write_jsonl(home / "replay" / "bbb.jsonl", cached[:2])  # another base model's answers, say
    dataset, notes = training_examples(cfg, tokenizer)
    assert "stand-ins" in notes[0] and dataset.stats["replay_unanswered"] and len(dataset) == 24 + len(prompts)


def test_replay_cache_sidecar_picks_this_models_answers(home, config, tmp_path):
    """Two answer sets for the same prompts are ambiguous by content alone; the sidecar naming
    this model's path, loading and settings picks one, and a sidecar naming another model (or
    this one quantised, as QLoRA answers) rules its cache out."""
    from deltatune.estimate.replay import expected_base_weights
    from deltatune.models.loader import resolve_model_path
    from deltatune.models.loader import load_tokenizer
    from deltatune.replay.answers import prompts_digest

    prompts = [f"Say something about {c}." for c in ("tea", "rain", "maps", "owls")]
    spec = write_jsonl(tmp_path / "prompts.jsonl", [{"instruction": p} for p in prompts])
    cfg = config(data={"replay": spec, "replay_max_new_tokens": 40, "replay_ratio": None})
    tokenizer = load_tokenizer(cfg.model.name)

    here, fp32 = resolve_model_path(cfg.model.name), expected_base_weights(cfg)
    assert fp32 == {"dtype": "float32", "quantised_bits": None}

    def cache(name, words, model, base):
        records = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": " ".join([w] * n)}]}
                   for p, (w, n) in zip(prompts, words)]
        write_jsonl(home / "replay" / f"{name}.jsonl", records)
        meta = {"model": model, "base": base, "prompts_sha256": prompts_digest(prompts),
                "system_prompt": cfg.data.system_prompt, "max_new_tokens": 40, "records": len(records)}
        (home / "replay" / f"{name}.meta.json").write_text(json.dumps(meta))

    (home / "replay").mkdir(parents=True)
    cache("aaa", [("short", 2)] * 4, model="/elsewhere/other-model", base=fp32)
    cache("bbb", [("long", 9)] * 4, model=here, base=fp32)
    cache("ccc", [("tiny", 1)] * 4, model=here, base={"dtype": "float32", "quantised_bits": 4})  # newest
    dataset, notes = training_examples(cfg, tokenizer)
    assert "4 cached answers" in notes[0]
    replay = dataset.examples[24:]
    expected = len(tokenizer(" ".join(["long"] * 9), add_special_tokens=False)["input_ids"]) + 1
    assert [sum(1 for label in ex["labels"] if label != -100) for ex in replay] == [expected] * 4
    (home / "replay" / "bbb.meta.json").unlink()  # now: one sidecar-less cache, one for another model
    (home / "replay" / "bbb.jsonl").unlink()
    dataset, notes = training_examples(cfg, tokenizer)
    assert "stand-ins" in notes[0]  # the other model's answers are never taken for this one's
