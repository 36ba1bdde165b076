"""load_target: bare models, run dirs with a trained adapter, run dirs without one."""

from __future__ import annotations

import pytest
import torch

from deltatune.config import Config, DataConfig, ModelConfig, dump_config
from deltatune.errors import DeltatuneError
from deltatune.methods.core import apply_method, save_adapter
from deltatune.models.loader import load_causal_lm
from deltatune.models.runs import is_run_dir, load_target


def make_run_dir(root, model_dir, with_adapter=True, data=None):
    """A run dir as training leaves it: config.yaml + adapter/ with non-zero LoRA weights."""
    run = root / "run"
    run.mkdir()
    data_cfg = DataConfig(train="builtin:orgfacts/train", **(data or {}))
    cfg = Config(model=ModelConfig(name=str(model_dir)), data=data_cfg,
                 method={"name": "lora", "r": 4, "targets": ["q_proj", "v_proj"]})
    dump_config(cfg, run / "config.yaml")
    model, _ = load_causal_lm(cfg.model)
    apply_method(model, cfg.method)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:  # LoRA B starts at zero: make the adapter change something
                p.normal_(0, 0.5)
    if with_adapter:
        save_adapter(model, cfg.method, run / "adapter", model_dir)
    return run, model


def test_bare_model_folder(tiny_llama_dir):
    loaded = load_target(str(tiny_llama_dir))
    assert loaded.run_cfg is None and loaded.base_path == str(tiny_llama_dir)
    assert not is_run_dir(tiny_llama_dir)
    assert loaded.tokenizer.pad_token_id is not None and not loaded.model.training


def test_run_dir_applies_the_adapter(tmp_path, tiny_llama_dir):
    run, trained = make_run_dir(tmp_path, tiny_llama_dir)
    loaded = load_target(str(run))
    base = load_target(str(run), with_adapter=False)
    ids = torch.tensor([[1, 2, 3, 4, 5]], device=trained.device)
    with torch.no_grad():
        want = trained.eval()(ids).logits
        got = loaded.model(ids).logits
        plain = base.model(ids).logits
    assert loaded.run_cfg is not None and loaded.label == "run"
    torch.testing.assert_close(got, want)
    assert not torch.allclose(plain, want)  # the base really is adapter-free


def test_run_dir_without_adapter_is_a_clear_error(tmp_path, tiny_llama_dir):
    run, _ = make_run_dir(tmp_path, tiny_llama_dir, with_adapter=False)
    with pytest.raises(DeltatuneError, match="no trained adapter yet"):
        load_target(str(run))
