"""P-tuning (Liu et al. 2021, "GPT Understands, Too", arXiv:2103.10385): virtual tokens at the
input, computed by a prompt encoder from a trained embedding.

    h = Decoder([f(E) ; E(x)])[P:],   E: (P, H) trained, f the prompt encoder (trained too)
    f = MLP([LSTM_fwd(E) ; LSTM_bwd(E)])   (encoder: lstm, the paper's: each virtual token
                                            sees all the others through the bi-LSTM)
    f = Linear-ReLU-Linear-ReLU-Linear(E)  (encoder: mlp)
    f = identity                           (encoder: none — the folded table)

The input side is prompt tuning's (`deltatune.methods.prompt.layer.PromptInstall`, its
decoder hooks), fed with the encoder's output: `PTuningEncoder.weight` is the (P, H) matrix
the hooks put in front of every input, recomputed at every prefill so the gradient reaches
the encoder. Parameter names are peft's PromptEncoder's (`embedding`, `lstm_head`, `mlp_head`).
"""

from __future__ import annotations

import torch
from torch import nn

from deltatune.errors import DeltatuneError
from deltatune.methods.installs import copy_state
from deltatune.methods.prompt.layer import SLOT, PromptInstall


class PTuningEncoder(nn.Module):
    """The prompt encoder; fp32. Initial values as peft's: N(0, 1) embedding, torch's
    LSTM / Linear init."""

    def __init__(self, num_tokens: int, dim: int, kind: str, hidden: int, lstm_layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.kind = kind
        self.embedding = nn.Embedding(num_tokens, dim)
        if kind == "lstm":
            self.lstm_head = nn.LSTM(dim, hidden, num_layers=lstm_layers, dropout=dropout,
                                     bidirectional=True, batch_first=True)
            self.mlp_head = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, dim))
        elif kind == "mlp":
            self.mlp_head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                          nn.Linear(hidden, dim))
        elif kind != "none":
            raise DeltatuneError(f"method.encoder must be lstm, mlp or none (got {kind!r})")

    @property
    def num_tokens(self) -> int:
        return self.embedding.weight.shape[0]

    @property
    def weight(self) -> torch.Tensor:
        """(P, H): the virtual tokens, f(E) (what `PromptInstall`'s hooks read)."""
        embedding = self.embedding.weight  # (P, H)
        if self.kind == "lstm":
            both_ways = self.lstm_head(embedding[None])[0]  # (1, P, 2 * hidden)
            return self.mlp_head(both_ways)[0]  # (P, H)
        if self.kind == "mlp":
            return self.mlp_head(embedding)
        return embedding

    def extra_repr(self) -> str:
        return f"encoder={self.kind}, num_virtual_tokens={self.num_tokens}, dim={self.embedding.weight.shape[1]}"


class PTuningInstall(PromptInstall):
    """Prompt tuning's installation (its hooks, attach / detach) over a `PTuningEncoder`: the
    state is the encoder's tensors, not one matrix."""

    def __init__(self, model: nn.Module, encoder: PTuningEncoder):
        super().__init__(model, encoder)

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f"{SLOT}.{k}": t for k, t in self.prompt.state_dict(keep_vars=True).items()}

    def state(self) -> dict[str, torch.Tensor]:
        return {name: t.detach() for name, t in self._tensors().items()}

    def load_state(self, tensors: dict[str, torch.Tensor], where: str) -> None:
        copy_state(self._tensors(), tensors, where)

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.prompt.parameters() if p.requires_grad]

    def merge(self) -> None:
        raise DeltatuneError(
            "P-tuning adds virtual tokens to the input: it cannot be merged into the base weights. "
            "Serve the adapter unmerged (deltatune serve --adapter NAME=RUN_DIR)"
        )

    unmerge = merge
    merge_and_unload = merge
