"""Fixtures shared by the peft parity tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def batch():
    """Token ids (2, 11) and an attention mask whose second row ends in 4 padding positions."""
    ids = torch.randint(0, 1000, (2, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, -4:] = 0
    return {"input_ids": ids, "attention_mask": mask}
