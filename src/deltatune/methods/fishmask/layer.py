"""FISH Mask's sparse delta and the layer that applies it.

Sung, Nair & Raffel 2021, "Training Neural Networks with Fixed Sparse Masks"
(arXiv:2111.09839): a fixed mask M picks the k entries with the largest Fisher information,
and only those train:

    W_t = W0_t + scatter(M_t, v_t)        v: (k,) trainable, zero at the start

The k trained entries are kept beside the frozen base, not written into it: `SparseDelta`
(on the model as `fishmask`) holds `values` v (k,) and the mask as `indices` (k,), sorted
positions into the concatenation of the targets' flattened weights in model order. So the
base stays bit-identical (switch-off, serving over a shared base), the optimiser holds Adam
moments for k numbers instead of whole matrices, and AdamW (weight decay included) cannot move
an entry outside the mask: it is no parameter at all. Saved, that is the sparse delta itself:
indices + values. `merge` adds the values into the base weights.

`SparseDeltaLinear` rebuilds its dense weight each forward (one weight-sized temporary per
layer, as DoRA does); the gradient reaching v is the weight gradient at the masked positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.merging import AdditiveMerge

SLOT = "fishmask"  # the delta's name on the model: `fishmask.values`, `fishmask.indices`


class SparseDelta(nn.Module):
    """v (k,) and the mask's sorted flat indices (k,) over tensors of `sizes` entries each."""

    def __init__(self, sizes: list[int], keep: int, device=None):
        super().__init__()
        self.sizes = list(sizes)
        self.offsets = [0]
        for size in self.sizes:
            self.offsets.append(self.offsets[-1] + size)  # tensor t owns [offsets[t], offsets[t+1])
        self.values = nn.Parameter(torch.zeros(keep, dtype=torch.float32, device=device))
        self.register_buffer("indices", torch.arange(keep, dtype=torch.int64, device=device))
        self.ready = False  # a mask was chosen (prepare / random) or loaded
        self.source = "none"
        self._bounds = self._slices()

    @property
    def total(self) -> int:
        return self.offsets[-1]

    def _slices(self) -> list[int]:
        """bounds[t]..bounds[t+1]: the positions of `indices` that fall in tensor t."""
        cuts = torch.tensor(self.offsets, dtype=torch.int64, device=self.indices.device)
        return torch.searchsorted(self.indices, cuts).tolist()

    @torch.no_grad()
    def set_mask(self, indices: torch.Tensor, source: str) -> None:
        """A new mask (checked, sorted); the values restart at zero."""
        indices = check_indices(indices.to(self.indices.device), self.values.numel(), self.total, "the mask")
        self.indices.copy_(indices)
        self.values.zero_()
        self._bounds = self._slices()
        self.ready, self.source = True, source

    def loaded(self, source: str = "loaded") -> None:
        """After the indices were copied in from saved state: re-check and re-slice."""
        check_indices(self.indices, self.values.numel(), self.total, "the saved fishmask.indices")
        self._bounds = self._slices()
        self.ready, self.source = True, source

    def entries(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions inside tensor t's flattened weight (k_t,), their values (k_t,))."""
        lo, hi = self._bounds[t], self._bounds[t + 1]
        return self.indices[lo:hi] - self.offsets[t], self.values[lo:hi]

    def counts(self) -> list[int]:
        """Masked entries per tensor."""
        return [self._bounds[t + 1] - self._bounds[t] for t in range(len(self.sizes))]

    def extra_repr(self) -> str:
        return f"keep={self.values.numel()}, candidates={self.total}, source={self.source}"


def check_indices(indices: torch.Tensor, keep: int, total: int, what: str) -> torch.Tensor:
    """`indices` as k sorted, distinct positions in [0, total), or a DeltatuneError."""
    if indices.dtype != torch.int64 or tuple(indices.shape) != (keep,):
        raise DeltatuneError(f"{what}: expected {keep} int64 positions, got {indices.dtype} {tuple(indices.shape)}")
    indices = indices.sort().values
    if keep and (int(indices[0]) < 0 or int(indices[-1]) >= total or bool((indices[1:] == indices[:-1]).any())):
        raise DeltatuneError(f"{what}: positions must be distinct and in [0, {total}) — "
                             "was the adapter trained on this base with the same method.targets?")
    return indices


class SparseDeltaLinear(AdditiveMerge, nn.Module):
    """Wraps (does not copy) `base_layer`; its weight is W0 + the delta's entries for tensor `t`.

    The delta is not registered as a submodule (it lives once, on the model), so the wrapper
    owns no tensors of its own. `fisher` is set while the Fisher is estimated: each backward
    then adds the squared weight gradient into it."""

    def __init__(self, base_layer: nn.Linear, delta: SparseDelta, t: int):
        super().__init__()
        self.base_layer = base_layer
        self.__dict__["_delta"] = delta  # a plain reference, not a child module
        self.t = t
        self.merged = False
        self.fisher: torch.Tensor | None = None

    def delta_weight(self) -> torch.Tensor:
        """scatter(M_t, v_t) as a dense (out, in) tensor in v's dtype."""
        positions, values = self._delta.entries(self.t)
        weight = self.base_layer.weight
        flat = torch.zeros(weight.numel(), dtype=values.dtype, device=weight.device)
        return flat.index_put((positions,), values).view(weight.shape)  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = (W0 + scatter(M, v)) x + b; merged: W0 already holds the entries."""
        if self.merged:
            return self.base_layer(x)
        if self.fisher is not None:
            return self._fisher_forward(x)
        if self.training and torch.is_grad_enabled() and not self._delta.ready:
            raise DeltatuneError(
                "fishmask: training started before the mask was chosen. method.mask: fisher needs the "
                "training data first (FishMaskInstall.prepare(batches), which the recipe calls before "
                "training); use method.mask: random to train without it")
        values = self._delta.values
        weight = self.base_layer.weight.to(values.dtype) + self.delta_weight()  # (out, in)
        bias = self.base_layer.bias
        bias = None if bias is None else bias.to(values.dtype)
        return F.linear(x.to(values.dtype), weight, bias).to(x.dtype)

    def _fisher_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The base function, through a weight copy whose gradient is squared into `fisher`."""
        weight = self.base_layer.weight.detach().to(torch.float32, copy=True).requires_grad_(True)
        fisher = self.fisher
        weight.register_hook(lambda grad: fisher.add_(grad.detach().float().square()))
        bias = self.base_layer.bias
        bias = None if bias is None else bias.float()
        return F.linear(x.float(), weight, bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"tensor={self.t}, merged={self.merged}"
