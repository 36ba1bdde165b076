"""HF peft's adapter-folder conventions shared by the methods that have a peft twin.

    key = to_peft_key("model.layers.0.self_attn.q_proj.lora_A.weight")
    # -> "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    target_modules = peft_target_modules(model, ["model.layers.0.self_attn.q_proj", ...])

peft stores a tuner's tensors under `base_model.model.<module path>.<tensor>` (the adapter
name removed), and selects modules with `target_modules`: a module matches when its name
equals an entry or ends with `.entry`.
"""

from __future__ import annotations

from torch import nn

from deltatune.errors import DeltatuneError

PEFT_PREFIX = "base_model.model."


def to_peft_key(name: str) -> str:
    return PEFT_PREFIX + name


def from_peft_key(key: str) -> str:
    if not key.startswith(PEFT_PREFIX):
        raise DeltatuneError(f"tensor key {key!r} lacks peft's {PEFT_PREFIX!r} prefix")
    return key[len(PEFT_PREFIX):]


def peft_target_modules(model: nn.Module, module_names: list[str]) -> list[str]:
    """Shortest `target_modules` list that selects exactly `module_names` under peft's rule:
    the last name components when that is exact (the common case: `q_proj, v_proj, ...`),
    else the full module names."""
    chosen = set(module_names)
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in chosen})
    selected = {
        name for name, _ in model.named_modules() if any(name == s or name.endswith("." + s) for s in suffixes)
    }
    # Modules inside our own wrappers (lora_A, base_layer) carry other suffixes; ignore them.
    selected = {n for n in selected if not any(n.startswith(c + ".") for c in chosen)}
    return suffixes if selected == chosen else sorted(chosen)


def peft_targets_to_ours(targets, default: str = "all-linear"):
    """peft's `target_modules` (a list of suffixes, or one regex string) -> our `targets`."""
    targets = targets or default
    if isinstance(targets, str) and targets != "all-linear":
        return "re:" + targets  # peft matches a string target with re.fullmatch
    return targets if isinstance(targets, str) else sorted(targets)
