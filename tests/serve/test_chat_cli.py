"""`deltatune chat` (scripted input, streamed output) and the serve/chat argument handling."""

from __future__ import annotations

import pytest

from deltatune.errors import DeltatuneError
from deltatune.generation import SamplingParams, chat_prompt_ids, generate
from deltatune.serve.chat import chat_loop, fit_history
from deltatune.serve.cli import parse_adapters


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    from deltatune.config import ModelConfig
    from deltatune.models.loader import load_causal_lm

    return load_causal_lm(ModelConfig(name=str(tiny_llama_dir)))


def scripted(lines):
    it = iter(lines)

    def read(prompt):
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    return read


def test_chat_keeps_history_streams_and_resets(tiny):
    model, tokenizer = tiny
    params = SamplingParams(max_new_tokens=6)
    written = []
    history = chat_loop(model, tokenizer, params, system="Be brief.",
                        read=scripted(["hello", "again", "/reset", "once more", "/exit", "never read"]),
                        write=written.append)
    assert [m["role"] for m in history] == ["system", "user", "assistant"]  # reset dropped 2 turns
    assert history[1]["content"] == "once more"
    # the streamed reply equals what generation gives for the same conversation
    [expected] = generate(model, tokenizer, [chat_prompt_ids(tokenizer, history[:2])], [params])
    assert history[2]["content"] == expected.text
    assert "(conversation reset)\n" in written and written.count("bot> ") == 3


def test_chat_ends_on_end_of_input(tiny):
    model, tokenizer = tiny
    history = chat_loop(model, tokenizer, SamplingParams(max_new_tokens=2), read=scripted(["hi"]),
                        write=lambda s: None)
    assert [m["role"] for m in history] == ["user", "assistant"]


def test_long_history_drops_oldest_turns(tiny):
    _, tokenizer = tiny
    messages = [{"role": "system", "content": "S"}]
    for i in range(20):
        messages += [{"role": "user", "content": f"question {i} " * 5}, {"role": "assistant", "content": "ok " * 5}]
    messages.append({"role": "user", "content": "last"})
    ids = fit_history(messages, tokenizer, limit=120)
    assert len(ids) <= 120 and messages[0]["role"] == "system" and messages[-1]["content"] == "last"
    assert len(messages) < 42


def test_parse_adapters():
    assert parse_adapters(["a=runs/a", "b=/x/y"]) == {"a": "runs/a", "b": "/x/y"}
    for bad in (["a"], ["=p"], ["a="], ["a=1", "a=2"]):
        with pytest.raises(DeltatuneError):
            parse_adapters(bad)


def test_serve_cli_rejects_bad_adapter_name_before_loading(tiny_llama_dir, capsys):
    from deltatune.cli import main

    assert main(["serve", "--model", str(tiny_llama_dir), "--adapter", "../x=/tmp"]) == 2
    assert "must match" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_llama_dir), "--max-queue", "0"]) == 2
