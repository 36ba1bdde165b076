"""The label value that marks a position as "no loss here", shared by data, losses and eval.

    from deltatune.data.labels import IGNORE_INDEX
    labels = [IGNORE_INDEX] * len(prompt_ids) + reply_ids      # the prompt is not trained

The pipeline writes it (masked prompt tokens in `tokenize`, padding in `batching.collate`);
the loss and evaluation skip it. It is PyTorch's `cross_entropy` default `ignore_index` and
the Hugging Face labels convention, so batches also work with `model(..., labels=...)`.
"""

from __future__ import annotations

IGNORE_INDEX = -100
