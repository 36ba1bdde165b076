"""A method's default module names, written for Llama-style decoders, translated for BERT-style
encoders, so `method: {name: ia3}` or `{name: adapter}` works on MiniLM without naming modules.

    method_cfg = encoder_method_config(method_cfg, model)   # the same config when nothing applies

Method configs default to Llama's module names (IA3's `targets: [k_proj, v_proj, down_proj]`,
the adapters' `attention: self_attn`, `attention_output: o_proj`, ...). A BERT-style encoder
(BERT, RoBERTa, MiniLM: blocks `encoder.layer.N` with `attention.self.{query,key,value}`,
`attention.output.dense`, `intermediate.dense`, `output.dense`) names the same parts
differently. Only keys the user left at their default are translated (a key they set is
theirs), by the tables below; `all-linear` and regexes are kept as they are. The resolved
config is what the run saves (config.yaml, the adapter), so inference installs the same modules.
"""

from __future__ import annotations

import re

from pydantic import BaseModel
from torch import nn

from deltatune.errors import DeltatuneError

FFN_OUTPUT = r"re:.*\.layer\.\d+\.output\.dense"  # the FFN's down projection (not attention.output.dense)

# module-name patterns over full names (targets, feedforward): Llama name -> BERT pattern(s)
PATTERN_NAMES = {
    "q_proj": ["query"],
    "k_proj": ["key"],
    "v_proj": ["value"],
    "o_proj": ["attention.output.dense"],
    "up_proj": ["intermediate.dense"],
    "gate_proj": [],  # BERT's FFN has no gate
    "down_proj": [FFN_OUTPUT],
}
PATTERN_KEYS = ("targets", "feedforward")

# names inside one block (the adapters' sublayer keys): key -> {Llama name: BERT name}
BLOCK_NAMES = {
    "attention": {"self_attn": "attention"},
    "attention_output": {"o_proj": "output.dense"},  # attention.output.dense
    "ffn": {"mlp": "output"},
    "ffn_output": {"down_proj": "dense"},  # output.dense: the FFN's projection back to the residual
}


def is_bert_style(model: nn.Module) -> bool:
    """Blocks with BERT's attention layout (`...attention.self.query`)."""
    return any(re.search(r"\.attention\.self\.query$", name) for name, _ in model.named_modules())


def _translate_patterns(value):
    items = [value] if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        for new in PATTERN_NAMES.get(item, [item]):
            if new not in out:
                out.append(new)
    return out if not isinstance(value, str) or len(out) != 1 else out[0]


def check_bert_fit(method_cfg: BaseModel) -> None:
    """Refuse, naming the keys, what cannot sit on a BERT block: a parallel adapter beside the
    FFN wraps one module fed the hidden states, and BERT splits its FFN in two
    (`intermediate` reads the hidden states, `output` reads the intermediate activation)."""
    if getattr(method_cfg, "placement", None) == "parallel" and "ffn" in (getattr(method_cfg, "parallel_at", None) or []):
        raise DeltatuneError(
            "method.placement: parallel with method.parallel_at: [ffn] puts an adapter beside one FFN module fed "
            "the hidden states; a BERT-style encoder splits its FFN into `intermediate` and `output`, so there is "
            "no such module. Use placement: houlsby or pfeiffer, or parallel_at: [attention]")


def encoder_method_config(method_cfg: BaseModel, model: nn.Module) -> BaseModel:
    """`method_cfg` with its default Llama module names replaced by the BERT names (see the
    module docstring); unchanged for other models or when no default names a module. A
    config that cannot fit a BERT block is refused (`check_bert_fit`)."""
    if not is_bert_style(model):
        return method_cfg
    check_bert_fit(method_cfg)
    update = {}
    for key, field in type(method_cfg).model_fields.items():
        if key in method_cfg.model_fields_set:
            continue
        value = getattr(method_cfg, key)
        if key in PATTERN_KEYS and isinstance(value, (str, list)):
            new = _translate_patterns(value)
        elif key in BLOCK_NAMES and isinstance(value, str):
            new = BLOCK_NAMES[key].get(value, value)
        else:
            continue
        if new != value:
            update[key] = new
    return type(method_cfg).model_validate({**method_cfg.model_dump(), **update}) if update else method_cfg
