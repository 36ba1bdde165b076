"""Fixtures for the data tests: the real SmolLM2 tokenizer (no model weights needed)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tok(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)


@pytest.fixture()
def write(tmp_path):
    """write(name, text) -> path of a file under tmp_path."""

    def _write(name: str, text: str):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return _write
