"""The reference model of preference and RL training, without a second copy when it can be avoided.

    reference = Reference.for_method(model, method)      # before training starts
    with reference.model() as ref:                        # no gradients, eval mode
        ref_logps, _ = sequence_logps(*hidden_and_head(ref, ids, mask), labels)

With a PEFT method the reference *is* the policy with the method switched off
(`deltatune.methods.core.switched_off`): the frozen base computes it and no weight is copied.
A method that trains the base weights in place (`full`, `freeze`, BitFit ...) has no
switched-off state once training has moved them, so the reference is a frozen deep copy made
before the first step (or, in `recipe: dpo`, log-probs precomputed once with
`preference.precompute_ref: true`, which needs no copy at all).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from deltatune.methods.core import switched_off


class Reference:
    """The frozen reference policy (see the module docstring)."""

    def __init__(self, policy, frozen_copy=None):
        self.policy, self.frozen_copy = policy, frozen_copy

    @classmethod
    def for_method(cls, model, method, copy_if_needed: bool = True) -> "Reference":
        """Switched-off PEFT, or a frozen copy for methods that train base weights in place
        (no copy when `copy_if_needed` is False: the caller precomputes what it needs)."""
        if method.trains_base_weights and copy_if_needed:
            frozen = copy.deepcopy(model).requires_grad_(False).eval()
            return cls(model, frozen)
        return cls(model)

    @property
    def is_copy(self) -> bool:
        return self.frozen_copy is not None

    @contextmanager
    def model(self) -> Iterator[torch.nn.Module]:
        """The reference model for the block: no gradients, eval mode (no dropout)."""
        target = self.frozen_copy if self.frozen_copy is not None else self.policy
        was_training = target.training
        target.eval()
        try:
            with torch.no_grad():
                if self.frozen_copy is not None:
                    yield target
                else:
                    with switched_off(self.policy):
                        yield target
        finally:
            target.train(was_training)
