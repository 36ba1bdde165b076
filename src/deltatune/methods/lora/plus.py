"""LoRA+ (Hayou et al. 2024, arXiv:2402.12354): B matrices learn faster than A.

    hooks = MethodHooks(param_groups=b_ratio_param_groups(wrappers))
    # train.lr_ratio_b: 16  ->  every lora_B at 16 x train.lr, everything else at train.lr

The paper shows that with equal learning rates the update is inefficient at large width and
recommends lr_B / lr_A = 2^4 (16) for decoder models. Without `train.lr_ratio_b` the groups are
the optimiser's default split (matrices decayed, 1-D tensors not), in model order, so a run with
the hook equals a run without it.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def b_ratio_param_groups(wrappers: dict[str, nn.Module]) -> Callable[[object], list[dict]]:
    """The `param_groups` hook for LoRA-family wrappers (each with `lora_B`)."""

    def groups(train_cfg) -> list[dict]:
        ratio = getattr(train_cfg, "lr_ratio_b", None)
        decay, no_decay, fast = [], [], []
        for wrapper in wrappers.values():
            b_params = {id(p) for p in wrapper.lora_B.parameters()} if ratio is not None else set()
            for name, p in wrapper.named_parameters():
                if name.startswith("base_layer.") or not p.requires_grad:
                    continue
                if id(p) in b_params:
                    fast.append(p)
                elif p.ndim < 2:
                    no_decay.append(p)
                else:
                    decay.append(p)
        return [
            {"params": decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"params": fast, "lr_ratio": ratio or 1.0},
        ]

    return groups
