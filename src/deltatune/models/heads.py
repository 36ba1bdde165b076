"""Heads on a model that train beside the method: scalar ones on a causal LM (reward model,
PPO's value function) and the K-way classification head of `recipe: cls` (on an encoder too).

    head = attach_scalar_head(model, "reward_head", seed=0)     # nn.Linear(hidden, 1) on the model
    head = attach_linear_head(model, "classifier_head", 8, seed=0)   # nn.Linear(hidden, 8)
    installed = WithHeads(installed, {"reward_head": head})     # trains, checkpoints, resumes with it
    scores = reward_scores(model, head, batch, "last")         # (B,) fp32: the last real token
    scores = reward_scores(model, head, batch, "answer_mean")  # (B,) the mean over the answer
    save_head(head, run_dir / "reward_head.safetensors"); load_head(model, path, "reward_head")

The head is an attribute of the model, so the default optimiser (every parameter with
requires_grad) picks it up; `WithHeads` adds its tensors to the method's `state()` and
`trainable()`, so checkpoints, resume, best-weight restore and gradient clipping cover it with
no change to the loop. A method's own parameter groups (LoRA+) get one more group for the head.
Switching the method off (reference forwards) leaves the head alone: it is not the method's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from deltatune.atomic import write_text_atomic
from deltatune.data.labels import IGNORE_INDEX
from deltatune.errors import DeltatuneError
from deltatune.forward import decoder_hidden


def hidden_size(model) -> int:
    """Width of the final hidden states: the LM head's input, or (an encoder without an LM head)
    the config's hidden_size."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None:
        return int(out.in_features)
    size = getattr(getattr(model, "config", None), "hidden_size", None)
    if not isinstance(size, int):
        raise DeltatuneError(f"{type(model).__name__} has neither an output head nor config.hidden_size: "
                             "cannot size a head for it")
    return size


def attach_linear_head(model, name: str, out_features: int, seed: int = 0) -> nn.Linear:
    """A fresh fp32 `nn.Linear(hidden, out_features)` as `model.<name>`, trainable, on the
    model's device.

    Initialised N(0, 1/(hidden+1)) (the scale InstructGPT's reward model used), bias 0, seeded
    on its own so the head is the same whatever else drew random numbers."""
    size = hidden_size(model)
    head = nn.Linear(size, out_features)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(out_features, size, generator=gen) / (size + 1) ** 0.5)
        head.bias.zero_()
    head.to(next(model.parameters()).device).requires_grad_(True)
    setattr(model, name, head)
    return head


def attach_scalar_head(model, name: str, seed: int = 0) -> nn.Linear:
    """A fresh fp32 `nn.Linear(hidden, 1)` as `model.<name>` (see `attach_linear_head`)."""
    return attach_linear_head(model, name, 1, seed)


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each right-padded row's last real token."""
    return attention_mask.long().sum(dim=1).clamp(min=1) - 1


def answer_mean_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, H) the mean of `hidden` (B, T, H) over each row's answer tokens (labels not
    IGNORE_INDEX; a row without any falls back to its last real token)."""
    answer = (labels.to(hidden.device) != IGNORE_INDEX).to(hidden.dtype)  # (B, T)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    empty = answer.sum(dim=1) == 0
    if bool(empty.any()):
        answer = answer.clone()
        answer[rows[empty], last_positions(attention_mask).to(hidden.device)[empty]] = 1.0
    return (hidden * answer.unsqueeze(-1)).sum(dim=1) / answer.sum(dim=1, keepdim=True)


def reward_features(model, batch: dict, pooling: str) -> torch.Tensor:
    """(B, H) fp32: what a reward head reads of each row of a batch (input_ids, attention_mask,
    labels), as `pooling` (preference.reward_pooling) says:

    last         the last real token's final hidden state (the usual reward model)
    answer_mean  the mean final hidden state over the answer's tokens. A pair that differs in
                 one span (a name, a number) differs in the hidden states *at* that span; the
                 last token sees it only through attention, the answer's mean reads it
                 directly (measured on orgfacts: README "Preference and RL")."""
    hidden, _ = decoder_hidden(model, batch["input_ids"], batch["attention_mask"])  # (B, T, H)
    if pooling == "answer_mean":
        return answer_mean_hidden(hidden, batch["attention_mask"], batch["labels"]).float()
    if pooling == "last":
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, last_positions(batch["attention_mask"]).to(hidden.device)].float()
    raise DeltatuneError(f"preference.reward_pooling {pooling!r}: use last or answer_mean")


def reward_scores(model, head: nn.Linear, batch: dict, pooling: str) -> torch.Tensor:
    """(B,) a reward head's scores of a batch, read as `reward_features` says."""
    return head(reward_features(model, batch, pooling)).squeeze(-1)


@dataclasses.dataclass
class WithHeads:
    """An `Installed` (deltatune.methods.protocol) plus heads that train with it.

    `head_lr_ratio`: the heads' lr is train.lr x this (a fresh random head may want more than
    the method); None keeps the optimiser's default groups when the method has none of its own."""

    inner: object
    heads: dict[str, nn.Module]
    head_lr_ratio: float | None = None

    def __post_init__(self):
        inner_groups = self.inner.hooks.param_groups
        head_params = [p for head in self.heads.values() for p in head.parameters()]
        head_group = {"params": head_params}
        if self.head_lr_ratio is not None:
            head_group["lr_ratio"] = self.head_lr_ratio
        if inner_groups is None and self.head_lr_ratio is not None:
            inner_groups = lambda cfg: [{"params": list(self.inner.trainable())}]  # noqa: E731
        groups = None if inner_groups is None else (lambda cfg: [*inner_groups(cfg), head_group])
        self.hooks = dataclasses.replace(self.inner.hooks, param_groups=groups)

    def state(self) -> dict[str, torch.Tensor]:
        own = {f"{name}.{k}": v.detach() for name, head in self.heads.items() for k, v in head.state_dict().items()}
        return {**self.inner.state(), **own}

    def load_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        prefixes = tuple(f"{name}." for name in self.heads)
        self.inner.load_state({k: v for k, v in tensors.items() if not k.startswith(prefixes)}, where)
        for name, head in self.heads.items():
            own = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(f"{name}.")}
            if set(own) != set(head.state_dict()):
                raise DeltatuneError(f"{where}: the saved state has no complete '{name}' (got {sorted(own)})")
            head.load_state_dict(own)

    def trainable(self) -> list[nn.Parameter]:
        return [*self.inner.trainable(), *(p for head in self.heads.values() for p in head.parameters())]

    def __getattr__(self, name):  # detach / attach / merge ...: the method's own
        if name == "inner":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


def save_head(head: nn.Linear, path: Path, kind: str, **info) -> None:
    """The head's weights (safetensors) and a small JSON saying what it is (plus `info`), both
    atomically."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    save_file({k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}, str(tmp))
    tmp.replace(path)
    about = {"kind": kind, "hidden_size": head.in_features, "out_features": head.out_features, **info}
    write_text_atomic(path.with_suffix(".json"), json.dumps(about) + "\n")


def load_head(model, path: Path, name: str) -> nn.Linear:
    """Attach the head saved at `path` to `model` as `model.<name>` (frozen, eval); its output
    width is the saved one."""
    path = Path(path)
    if not path.is_file():
        raise DeltatuneError(f"{path} is missing: this run has no trained {name}")
    tensors = load_file(str(path))
    if tensors["weight"].shape[1] != hidden_size(model):
        raise DeltatuneError(f"{path}: head of width {tensors['weight'].shape[1]} does not fit a model of hidden "
                             f"size {hidden_size(model)}")
    head = attach_linear_head(model, name, int(tensors["weight"].shape[0]))
    head.load_state_dict(tensors)
    head.requires_grad_(False)
    return head
