"""Bottleneck adapter layers: the down -> f -> up bottleneck and the two ways it joins a sublayer.

Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP" (arXiv:1902.00751), and
Pfeiffer et al. 2021, "AdapterFusion" (arXiv:2005.00247) — in series after a sublayer's output y:

    y' = y + s * (W_up f(W_down y + b_down) + b_up)          (SequentialAdapter, s = 1)

He et al. 2022, "Towards a Unified View of Parameter-Efficient Transfer Learning"
(arXiv:2110.04366) — the scaled parallel adapter, beside a sublayer F, fed its input x:

    y' = F(x) + s * (W_up f(W_down x + b_down) + b_up)       (ParallelAdapter, s = 4)

W_down: (b, H), W_up: (H, b); per adapter 2*H*b + b + H trainable elements. W_up and both biases
start at zero (W_down ~ N(0, init_std^2)), so every adapter outputs 0 and the model equals its
base at step 0. The update is non-linear in the input, so nothing folds into the base weights:
`merge` raises, and adapters are served unmerged.
"""

from __future__ import annotations

import torch
from torch import nn

from deltatune.errors import DeltatuneError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class Bottleneck(nn.Module):
    """x -> W_up f(W_down x + b_down) + b_up: (..., H) -> (..., b) -> (..., H)."""

    def __init__(self, hidden: int, bottleneck: int, activation: str, init_std: float,
                 dtype: torch.dtype, device: torch.device | None = None):
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck, bias=True, dtype=dtype, device=device)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(bottleneck, hidden, bias=True, dtype=dtype, device=device)
        with torch.no_grad():  # near identity: the adapter's output starts at exactly 0
            nn.init.normal_(self.down.weight, mean=0.0, std=init_std)
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))  # (..., H) -> (..., b) -> (..., H)


def _adapter_dtype(module: nn.Module) -> tuple[torch.dtype, torch.device | None]:
    """fp32 (or wider) master weights on the base module's device, whatever its dtype."""
    param = next(module.parameters(), None)
    if param is None:
        return torch.float32, None
    dtype = param.dtype if param.dtype.is_floating_point else torch.float32
    return torch.promote_types(dtype, torch.float32), param.device


class _NotMergeable:
    """Bottleneck adapters are non-linear in their input: no weight change reproduces them."""

    def merge(self) -> None:
        raise DeltatuneError(
            "bottleneck adapters (method adapter) apply W_up f(W_down h): a non-linear function of the "
            "hidden state that no change of the base weights reproduces, so they cannot be merged into "
            "the base weights; serve the adapter unmerged (deltatune serve / generate load it as it is)"
        )

    def unmerge(self) -> None:
        """Nothing was ever merged."""


class SequentialAdapter(_NotMergeable, nn.Module):
    """Wraps (does not copy) `base_layer` (a sublayer's output projection); the adapter runs on
    its output: y' = y + s * adapter(y) (Houlsby / Pfeiffer placements)."""

    def __init__(self, base_layer: nn.Module, hidden: int, bottleneck: int, activation: str,
                 init_std: float, scaling: float):
        super().__init__()
        self.base_layer = base_layer
        dtype, device = _adapter_dtype(base_layer)
        self.adapter = Bottleneck(hidden, bottleneck, activation, init_std, dtype, device)
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (..., H)
        delta = self.scaling * self.adapter(y.to(self.adapter.up.weight.dtype))
        return y + delta.to(y.dtype)

    def extra_repr(self) -> str:
        return f"sequential, scaling={self.scaling}"


class ParallelAdapter(_NotMergeable, nn.Module):
    """Wraps (does not copy) a whole sublayer `base_layer` (the FFN, or attention with its tuple
    output and keyword arguments); the adapter reads the sublayer's input hidden states:
    y' = F(x) + s * adapter(x) (He et al. 2022)."""

    def __init__(self, base_layer: nn.Module, hidden: int, bottleneck: int, activation: str,
                 init_std: float, scaling: float):
        super().__init__()
        self.base_layer = base_layer
        dtype, device = _adapter_dtype(base_layer)
        self.adapter = Bottleneck(hidden, bottleneck, activation, init_std, dtype, device)
        self.scaling = scaling

    def forward(self, *args, **kwargs):
        x = args[0] if args else kwargs.get("hidden_states")  # (..., H): the sublayer's input
        if not isinstance(x, torch.Tensor):
            raise RuntimeError(f"{type(self.base_layer).__name__} was called without hidden states as its first "
                               "argument or `hidden_states=`: a parallel adapter cannot find its input")
        out = self.base_layer(*args, **kwargs)
        y = out[0] if isinstance(out, tuple) else out  # attention returns (output, weights)
        delta = (self.scaling * self.adapter(x.to(self.adapter.up.weight.dtype))).to(y.dtype)
        return (y + delta, *out[1:]) if isinstance(out, tuple) else y + delta

    def extra_repr(self) -> str:
        return f"parallel, scaling={self.scaling}"
