"""One server, one tiny base, adapters of every way a method plugs in: LoRA (wrapper
modules), prompt tuning and P-tuning (decoder hooks adding virtual input tokens), IA3
(rescaling wrappers), prefix tuning and P-tuning v2 (decoder hooks seeding the KV cache with
trained keys/values: every attention mask and position is P longer than the caller's), and
bottleneck adapters in series (houlsby) and beside the sublayers (parallel).

The worker swaps one adapter in per batch through `AdapterHandle.active()`; whatever order
requests arrive in, each must get exactly the greedy text in-process generation gives for
that base + adapter, and switching methods in and out must leave the base untouched.
Clients are the official `openai` client over real HTTP on localhost.

The base is `tiny_llama_dir`'s architecture and tokenizer with weights drawn at std 0.1
instead of 0.02 (`lively_llama_dir`). At 0.02 with tied embeddings every chat prompt gets
"\n" twelve times (the prompt's last token, read back out through the residual stream), and
neither prompt tuning (attention over RMS-normalised virtual tokens is near uniform; even
optimised embeddings leave the margin above 0.1) nor IA3 at 1 + 0.3·randn changes one
token of it, so the tests could not tell the adapters from the base.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time

import httpx
import openai
import pytest
import torch

from deltatune.generation import SamplingParams, chat_prompt_ids, generate

KEY = "test-key-123"
BASE = "tiny"
N = 12  # tokens per completion
QUESTIONS = [
    [{"role": "user", "content": "What colour is the door?"}],
    [{"role": "user", "content": "Name three rivers that flow north, and say why."}],  # longer: left padding in batches
]
METHODS = {
    "lora": ({"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"}, 11),
    "prompt": ({"name": "prompt", "num_virtual_tokens": 4}, 12),
    "ia3": ({"name": "ia3"}, 13),
    # the MLP reparameterisation (prefix_projection, the default) is folded to a table when saved
    "prefix": ({"name": "prefix", "num_virtual_tokens": 4}, 15),
    "adapter": ({"name": "adapter", "placement": "houlsby", "bottleneck": 8}, 16),
    "parallel_adapter": ({"name": "adapter", "placement": "parallel", "parallel_at": ["ffn", "attention"],
                          "bottleneck": 8}, 17),
    "ptuning": ({"name": "ptuning", "num_virtual_tokens": 4}, 18),  # bi-LSTM encoder, folded when saved
    "ptuning_v2": ({"name": "ptuning_v2", "num_virtual_tokens": 5}, 19),
    # loaded over HTTP at run time
    "late_prompt": ({"name": "prompt", "num_virtual_tokens": 3}, 14),
    "late_prefix": ({"name": "prefix", "num_virtual_tokens": 3, "prefix_projection": False}, 20),
}
# loaded at start-up
SERVED = [BASE, "lora", "prompt", "ia3", "prefix", "adapter", "parallel_adapter", "ptuning", "ptuning_v2"]
KV_PREFIXED = ["prefix", "ptuning_v2"]  # the adapters that make the KV cache longer than the tokens


@pytest.fixture(scope="module")
def lively_llama_dir(tiny_llama_dir, tmp_path_factory):
    """tiny_llama_dir's config and tokenizer, weights re-drawn at std 0.1 (see the docstring)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_llama_dir)
    config.initializer_range = 0.1
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("lively-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def mixed_root(lively_llama_dir, tmp_path_factory, adapter_maker):
    """root/<name> for every METHODS entry: run dirs, each adapter perturbed so it answers differently."""
    root = tmp_path_factory.mktemp("mixed-adapters")
    for name, (method, seed) in METHODS.items():
        adapter_maker(lively_llama_dir, root / name, method, seed)
    return root


@pytest.fixture(scope="module")
def server(lively_llama_dir, mixed_root):
    from deltatune.serve.server import ServeSettings, build_state, start_in_thread

    settings = ServeSettings(api_key=KEY, adapter_root=mixed_root, model_name=BASE, max_tokens_cap=64,
                             max_prompt_tokens=200, max_batch=4, max_queue=64)
    adapters = {name: str(mixed_root / name) for name in SERVED if name != BASE}
    handle = start_in_thread(build_state(str(lively_llama_dir), adapters, settings))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokenizer(lively_llama_dir):
    from deltatune.models.loader import load_tokenizer

    return load_tokenizer(str(lively_llama_dir))


class Reference:
    """In-process greedy answers: a fresh base per model, the adapter installed with
    `core.load_adapter` (not the server's handles), `generate` on one prompt alone."""

    def __init__(self, base_dir, root, tokenizer):
        self.base_dir, self.root, self.tokenizer = base_dir, root, tokenizer
        self._models, self._results = {}, {}

    def model(self, name: str):
        """(model, tokenizer) for `name`, loaded on first use."""
        from deltatune.config import ModelConfig
        from deltatune.methods.core import load_adapter
        from deltatune.models.loader import load_causal_lm

        if name not in self._models:
            model, tok = load_causal_lm(ModelConfig(name=str(self.base_dir)))
            if name != BASE:
                load_adapter(model, self.root / name / "adapter", tokenizer=tok)
            self._models[name] = (model.eval(), tok)
        return self._models[name]

    def ids(self, name: str, prompt_ids: list[int], max_tokens: int = N):
        key = (name, tuple(prompt_ids), max_tokens)
        if key not in self._results:
            model, tok = self.model(name)
            [self._results[key]] = generate(model, tok, [prompt_ids], [SamplingParams(max_new_tokens=max_tokens)])
        return self._results[key]

    def __call__(self, name: str, messages: list[dict], max_tokens: int = N):
        return self.ids(name, chat_prompt_ids(self.tokenizer, messages), max_tokens)


@pytest.fixture(scope="module")
def reference(lively_llama_dir, mixed_root, tokenizer):
    return Reference(lively_llama_dir, mixed_root, tokenizer)


def chat(client, model, messages, max_tokens=N, **kw):
    return client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=max_tokens, **kw)


def assert_matches(out, expected, model):
    assert out.model == model
    assert out.choices[0].message.content == expected.text, model
    assert out.choices[0].finish_reason == expected.finish_reason, model
    # virtual tokens are not the caller's: usage counts the real prompt tokens only
    assert out.usage.prompt_tokens == expected.prompt_tokens, model
    assert out.usage.completion_tokens == expected.completion_tokens, model


def assert_base_is_plain(model, reference):
    """No adapter left switched on (no prompt or prefix slot, no decoder hooks, no wrapper
    modules), and the served base's weights bit-identical to a fresh load of the base."""
    assert not hasattr(model, "prompt_embeddings") and not hasattr(model, "prefix_encoder")
    decoder = model.get_decoder()
    assert not decoder._forward_pre_hooks and not decoder._forward_hooks
    assert not [n for n, _ in model.named_modules() if n.endswith(".base_layer")]
    served, fresh = model.state_dict(), reference.model(BASE)[0].state_dict()
    assert served.keys() == fresh.keys()
    changed = [k for k in fresh if not torch.equal(served[k], fresh[k])]
    assert not changed, changed


def run_held(worker, submit, jobs):
    """Hold the worker between batches, start `submit(*job)` for every job from its own thread,
    wait until all are queued, release the worker, wait for every reply: [(job, result)]. All
    replies are in before anything is asserted, so a failure leaves no request queued behind."""
    gate = threading.Event()
    held = worker.call(lambda: gate.wait(120))  # the worker thread waits here, between batches
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        try:
            futures = [pool.submit(submit, *job) for job in jobs]
            assert _wait_for(lambda: worker.queued() == len(jobs)), worker.queued()
        finally:
            gate.set()
    assert held.result(timeout=30) is True
    return [(job, future.result()) for job, future in zip(jobs, futures)]


# ---------------------------------------------------------------------------------------------


def test_all_methods_are_listed(client):
    assert [m.id for m in client.models.list().data] == SERVED


def test_interleaved_requests_equal_in_process_generation(server, client, reference):
    """Every served model one after another, two rounds, both questions: every answer is the
    in-process greedy answer; no two models answer alike (so every adapter changes the text)."""
    for round_ in range(2):
        for messages in QUESTIONS:
            texts = {}
            for name in SERVED:
                out = chat(client, name, messages)
                assert_matches(out, reference(name, messages), name)
                texts[name] = out.choices[0].message.content
            assert len(set(texts.values())) == len(SERVED), (round_, texts)
    assert_base_is_plain(server.state.model, reference)


def test_completions_endpoint_for_every_method(client, tokenizer, reference):
    """/v1/completions (raw text prompt, no chat template), plain and streamed, per method."""
    prompt = "The door is"
    ids = tokenizer(prompt)["input_ids"]
    for name in SERVED:
        expected = reference.ids(name, ids)
        out = client.completions.create(model=name, prompt=prompt, temperature=0, max_tokens=N)
        assert out.choices[0].text == expected.text, name
        assert out.usage.prompt_tokens == len(ids)
        streamed = client.completions.create(model=name, prompt=prompt, temperature=0, max_tokens=N, stream=True)
        assert "".join(c.choices[0].text for c in streamed if c.choices) == expected.text, name


def _wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_concurrent_mixed_requests_alternate_adapters(server, client, reference, monkeypatch):
    """6 requests per model (both questions) from threads at once. The worker is held until
    all are queued, so it must batch them per model, up to max_batch=4 (4 + 2 per model, each
    first batch mixing both prompt lengths: left padding under every method, and under the KV
    prefixes a mask and cache P longer than the tokens), switching adapters between batches;
    every answer still equals its lone in-process reference."""
    registry, worker = server.state.registry, server.state.worker
    activated = []
    real_activate = registry.activate

    def recording_activate(name):
        activated.append(name)
        return real_activate(name)

    monkeypatch.setattr(registry, "activate", recording_activate)
    jobs = [(client, name, messages) for _ in range(3) for messages in QUESTIONS for name in SERVED]
    for (_, name, messages), out in run_held(worker, chat, jobs):
        assert_matches(out, reference(name, messages), name)
    monkeypatch.undo()
    assert sorted(activated) == sorted(SERVED * 2), activated  # per model: one batch of 4, one of 2
    assert sum(a != b for a, b in itertools.pairwise(activated)) >= len(SERVED) - 1, activated
    assert worker.stats["max_batch_seen"] == 4
    assert_base_is_plain(server.state.model, reference)


@pytest.mark.parametrize("name", ["prompt", *KV_PREFIXED])
def test_rows_finishing_early_in_a_batch(server, client, reference, name):
    """One batch of 4 for a virtual-token / KV-prefix adapter whose rows stop after 2, 5, 9
    and 12 tokens: each finished row leaves the cache (`batch_select_indices` on a cache that
    starts with the prefix) and the mask, and the rows still running keep their lone answers."""
    worker = server.state.worker
    lengths = [2, 5, 9, 12]
    batches = worker.stats["batches"]
    jobs = [(client, name, QUESTIONS[i % 2], n) for i, n in enumerate(lengths)]
    for (_, _, messages, n), out in run_held(worker, chat, jobs):
        expected = reference(name, messages, n)
        assert expected.completion_tokens == n  # no EOS before n: the row really runs n steps
        assert_matches(out, expected, name)
    assert worker.stats["batches"] == batches + 1  # all four shared one batch


@pytest.mark.parametrize("name", ["prompt", "prefix", "adapter"])
def test_streamed_chat_equals_non_streamed(client, reference, name):
    for messages in QUESTIONS:
        whole = chat(client, name, messages)
        chunks = list(chat(client, name, messages, stream=True, stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content == reference(name, messages).text
        finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
        assert len(finals) == 1 and finals[0].choices[0].finish_reason == whole.choices[0].finish_reason
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
        assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


@pytest.mark.parametrize("late, neighbour", [("late_prompt", "prompt"), ("late_prefix", "prefix")])
def test_runtime_load_and_unload_of_an_adapter(server, client, reference, late, neighbour):
    messages = QUESTIONS[0]
    before = {name: chat(client, name, messages).choices[0].message.content for name in SERVED}
    with pytest.raises(openai.NotFoundError):
        chat(client, late, messages)

    r = client.post("/adapters", body={"name": late, "path": late}, cast_to=httpx.Response)
    assert r.status_code == 200 and r.json()["id"] == late
    assert [m.id for m in client.models.list().data] == [*SERVED, late]
    expected = reference(late, messages)
    for name in [late, BASE, late, neighbour, "adapter", late]:  # switch in and out of it
        out = chat(client, name, messages)
        if name == late:
            assert_matches(out, expected, name)
        else:
            assert out.choices[0].message.content == before[name]
    assert expected.text not in before.values()

    client.delete(f"/adapters/{late}", cast_to=httpx.Response)
    assert [m.id for m in client.models.list().data] == SERVED
    with pytest.raises(openai.NotFoundError):
        chat(client, late, messages)
    assert_base_is_plain(server.state.model, reference)
    after = {name: chat(client, name, messages).choices[0].message.content for name in SERVED}
    assert after == before
    assert after[BASE] == reference(BASE, messages).text
