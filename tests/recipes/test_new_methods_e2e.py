"""The two methods of new kinds through the real `sft` recipe on the tiny Llama: prompt tuning
(changes the input) and IA3 (rescales activations) learn, leave the base untouched, save in
peft's layout, and bad method configs fail before anything is written.

    .venv/bin/pytest tests/recipes/test_new_methods_e2e.py
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from deltatune.errors import DeltatuneError
from deltatune.recipes import sft
from deltatune.training.metrics import read_metrics

METHODS = {
    "prompt": ({"name": "prompt", "num_virtual_tokens": 4, "init_text": "door colours"}, 3e-1),
    "ia3": ({"name": "ia3"}, 1e-1),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_learns_through_the_recipe_and_keeps_the_base(make_cfg, capture_model, name):
    method, lr = METHODS[name]
    cfg = make_cfg(method=method, train={"lr": lr, "max_steps": 12}, eval={"before_after": True})
    run_dir = sft.run(cfg)
    losses = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train")]
    assert losses[-1] < losses[0], losses
    params = dict(capture_model["model"].named_parameters())
    for n, before in capture_model["frozen"].items():
        assert torch.equal(params[n], before), f"frozen {n} changed"
    adapter = run_dir / "adapter"
    peft_cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert peft_cfg["peft_type"] == {"prompt": "PROMPT_TUNING", "ia3": "IA3"}[name]
    assert load_file(str(adapter / "adapter_model.safetensors"))
    ev = json.loads((run_dir / "eval.json").read_text())
    # the base was measured with the method switched off, the tuned model with it on
    assert ev["before"]["val"]["loss"] > ev["after"]["val"]["loss"]


@pytest.mark.parametrize("method, key", [
    ({"name": "ia3", "targets": ["no_such_proj"]}, "method.targets"),
    ({"name": "ia3", "targets": ["k_proj"], "feedforward": ["down_proj"]}, "method.feedforward"),
    ({"name": "prompt", "num_virtual_tokens": 2, "init_text": "a much longer text than two tokens"},
     "method.init_text"),
])
def test_bad_method_config_fails_before_anything_is_written(make_cfg, tmp_path, method, key):
    cfg = make_cfg(run="bad", method=method, eval={"before_after": True})
    with pytest.raises(DeltatuneError, match=key.replace(".", r"\.")):
        sft.run(cfg)
    assert not (tmp_path / "bad").exists(), "nothing may be written for a config that cannot run"
