"""Find, match and swap submodules of a model: the surgery every PEFT method shares.

    names = match_linear_targets(model, "all-linear")        # every Linear but the LM head
    names = match_linear_targets(model, ["q_proj", "re:.*\\.mlp\\..*"])
    swap_module(model, "model.layers.0.self_attn.q_proj", wrapper)
    blocks_name, blocks = find_block_list(model)             # ("model.layers", ModuleList)

Pattern language (used for LoRA `targets` and freeze `train_modules`):
  - `name`        a module whose full name equals `name` or ends with `.name` (`q_proj`,
                  `self_attn.q_proj`, `model.layers.0.mlp.up_proj`)
  - `re:REGEX`    a module whose full name matches REGEX as a whole (`re.fullmatch`)
  - `all-linear`  every `nn.Linear` except the output head (and anything tied to the input
                  embeddings)
A list mixes these; every entry must match something, so a typo is an error, not a no-op.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from deltatune.errors import DeltatuneError

ALL_LINEAR = "all-linear"


def as_pattern_list(targets: str | Iterable[str]) -> list[str]:
    """A single pattern string or a list of them -> list of patterns."""
    return [targets] if isinstance(targets, str) else list(targets)


def name_matches(name: str, pattern: str) -> bool:
    """Does the full module name match one pattern (suffix name or `re:` regex)?"""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return name == pattern or name.endswith("." + pattern)


def is_wrapper(module: nn.Module) -> bool:
    """A module a method swapped in around a base layer (it keeps the original as `base_layer`)."""
    return isinstance(getattr(module, "base_layer", None), nn.Module)


def plain_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Named modules of the base model, skipping the insides of already-swapped-in wrappers."""
    out: list[tuple[str, nn.Module]] = []
    skip: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in skip):
            continue
        out.append((name, module))
        if is_wrapper(module):
            skip.append(name + ".")
    return out


def output_head_names(model: nn.Module) -> set[str]:
    """Names of the output head and of any Linear sharing the input embedding's weight."""
    heads: set[str] = set()
    out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    in_emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied = getattr(in_emb, "weight", None)
    for name, module in model.named_modules():
        if module is out_emb or (tied is not None and getattr(module, "weight", None) is tied):
            heads.add(name)
    return heads


def linear_names(model: nn.Module) -> list[str]:
    """Full names of the plain (unwrapped) `nn.Linear` modules, in model order."""
    return [n for n, m in plain_modules(model) if isinstance(m, nn.Linear) and not is_wrapper(m)]


def summarize_names(names: Iterable[str], limit: int = 40) -> str:
    """`q_proj, k_proj, ... (e.g. model.layers.0.self_attn.q_proj)`: names deduplicated by
    their last component, for error messages that must stay readable on a 30-layer model."""
    names = list(names)
    short = list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in names if n))
    text = ", ".join(short[:limit]) + (", ..." if len(short) > limit else "")
    return f"{text} (e.g. {names[0]})" if names else "(none)"


def match_names(
    candidates: list[str], targets: str | Iterable[str], key: str, kind: str = "module"
) -> list[str]:
    """Candidates matching any pattern, in model order; a pattern matching nothing is an error
    that lists what exists. `key` names the config key for the message."""
    patterns = as_pattern_list(targets)
    if not patterns:
        raise DeltatuneError(f"{key} is empty: name at least one {kind} to select")
    for pattern in patterns:
        if pattern.startswith("re:"):
            try:
                re.compile(pattern[3:])
            except re.error as err:
                raise DeltatuneError(f"{key}: bad regex {pattern!r}: {err}") from None
        if not any(name_matches(name, pattern) for name in candidates):
            raise DeltatuneError(
                f"{key}: {pattern!r} matches no {kind} of this model. {kind.capitalize()}s that "
                f"exist: {summarize_names(candidates)}. Use one of these names (suffix match), "
                f"a regex 're:...' over full names, or 'all-linear'."
            )
    return [n for n in candidates if any(name_matches(n, p) for p in patterns)]


def match_linear_targets(model: nn.Module, targets: str | Iterable[str], key: str = "method.targets") -> list[str]:
    """Full names of the `nn.Linear` modules that `targets` selects (see module docstring)."""
    linears = linear_names(model)
    if targets == ALL_LINEAR or as_pattern_list(targets) == [ALL_LINEAR]:
        heads = output_head_names(model)
        chosen = [n for n in linears if n not in heads]
        if not chosen:
            raise DeltatuneError(f"{key}: 'all-linear' found no Linear module besides the output head")
        return chosen
    return match_names(linears, targets, key, kind="Linear module")


def find_block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer block stack: the largest `nn.ModuleList` whose children share one class
    (e.g. `model.layers` for Llama, `transformer.h` for GPT-2)."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if len({type(child) for child in module}) == 1:
                if best is None or len(module) > len(best[1]):
                    best = (name, module)
    if best is None:
        raise DeltatuneError(
            f"{type(model).__name__} has no list of repeated transformer blocks; "
            "select trainable parts with method.train_modules instead"
        )
    return best


def swap_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put `new` at the dotted path `name`; returns the module that was there."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


def wrappers(model: nn.Module) -> dict[str, nn.Module]:
    """Every swapped-in wrapper module by full name (outermost only)."""
    return {name: m for name, m in plain_modules(model) if is_wrapper(m)}
