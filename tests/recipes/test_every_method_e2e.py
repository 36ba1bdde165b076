"""Every method in the registry through the real `sft` recipe on the tiny Llama (its config from
tests/method_examples.py, FISH Mask with its Fisher mask chosen by the training loop's `prepare`
call): the training loss falls, the validation loss measured on the base (switched off, or
before the first update) is above the tuned model's, frozen base tensors stay bit-identical
(except those a method moves on purpose: Delta-LoRA's targets), and the adapter folder reloads.

    .venv/bin/pytest tests/recipes/test_every_method_e2e.py
"""

from __future__ import annotations

import json

import pytest
import torch
from method_examples import EXAMPLES

from deltatune.methods.registry import METHODS
from deltatune.recipes import sft
from deltatune.training.metrics import read_metrics

# The tiny model is random: a step size that moves each method visibly in 12 steps. Virtual
# tokens and prefixes start as noise and need the largest; SAID moves d numbers for all weights.
LR = {"prompt": 3e-1, "prefix": 1e-1, "ptuning": 1e-1, "ptuning_v2": 1e-1, "ia3": 1e-1, "said": 1e-1,
      "bitfit": 5e-2, "full": 3e-3, "freeze": 3e-3}
CONFIG = {**EXAMPLES, "fishmask": {"name": "fishmask", "keep_ratio": 0.05, "mask": "fisher", "num_samples": 8}}
# frozen tensors a method changes on purpose (the matrix's MOVED_BY_HOOK)
MOVED = {"delta_lora": lambda n: n.endswith(".base_layer.weight")}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_learns_through_the_recipe_and_keeps_the_base(make_cfg, capture_model, name):
    cfg = make_cfg(run=name, method=CONFIG[name], train={"lr": LR.get(name, 1e-2), "max_steps": 12},
                   eval={"before_after": True})
    run_dir = sft.run(cfg)
    losses = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train")]
    assert losses[-1] < losses[0], losses
    params = dict(capture_model["model"].named_parameters())
    moved = MOVED.get(name, lambda n: False)
    for n, before in capture_model["frozen"].items():
        if n in params and not moved(n):
            assert torch.equal(params[n], before), f"frozen {n} changed"
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["before"]["val"]["loss"] > report["after"]["val"]["loss"]
    assert report["parameters"]["trainable"] > 0 and report["resources"]["tokens_per_s"] > 0
    assert (run_dir / "adapter" / "deltatune_adapter.json").is_file()
    if name == "fishmask":  # the mask came from the Fisher over the training batches
        [prepared] = read_metrics(run_dir / "metrics.jsonl", "prepare")
        assert prepared["mask"] == "fisher" and prepared["examples"] == 8
