"""Floating-point operations of one training micro-batch, split into the decoder layers and the
rest (embeddings, output head, loss): what the step time is computed from.

For a micro-batch with C token cells (rows x padded width; packed: its real tokens), N labelled
positions and S = sum over rows of T^2, on a model with L blocks of P matmul weight elements
each (the method's own matrices included: LoRA's A and B, a quantised weight at its unpacked
size), P_t of them trainable, attention width d (heads x head_dim), head size P_head = H x V
and backward running down to block `low` (the lowest block with a trainable tensor; 0 when
anything below the blocks trains):

    forward   layers  L x (2 C P + 2 S d)           every weight once per cell; QK^T and AV
                                                    over the causal half of T x T
              head    2 N P_head                    the vocabulary projection runs on labelled
                                                    positions only (deltatune.losses.lm)
    backward  layers  (L - low) x (2 C P + 4 S d)   gradients w.r.t. activations, in every block
                                                    above `low` (attention's backward: 2x its forward)
                    + L x 2 C P_t                   gradients w.r.t. the trainable weights only:
                                                    a frozen weight gets none (LoRA skips the base's)
              head    2 N P_head                    (+ 2 N P_head when the head itself trains)
    gradient checkpointing: + the layers' forward again, for the blocks backward runs through

Elementwise work (norms, activations, softmax, dropout, dequantisation) is not counted: the
effective rates that turn FLOPs into seconds are measured on the real layers
(`estimate.probe`), so it is inside them.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Flops:
    layers: float  # decoder blocks, forward + backward
    head: float  # everything outside the blocks: output head and loss

    @property
    def total(self) -> float:
        return self.layers + self.head


def micro_batch_flops(counts, batch, checkpointing: bool = False) -> Flops:
    """`Flops` of one micro-batch; `counts` an `estimate.model_info.Counts`, `batch` a
    `BatchStats` (cells, labelled, attention)."""
    blocks = counts.layers
    through = blocks - counts.lowest_trainable_block  # blocks backward runs through
    cells, labelled, square = batch.cells, batch.labelled, batch.attention
    forward_block = 2 * cells * counts.block_matmul + 2 * square * counts.attention_width
    backward_block = 2 * cells * counts.block_matmul + 4 * square * counts.attention_width
    layers = blocks * forward_block + through * backward_block + blocks * 2 * cells * counts.block_trainable_matmul
    if checkpointing:
        layers += through * forward_block
    head_pass = 2 * labelled * counts.head_matmul
    backward_head = head_pass if (through > 0 or counts.head_trainable) else 0.0
    head = head_pass + backward_head + (head_pass if counts.head_trainable else 0.0)
    return Flops(layers, head)
