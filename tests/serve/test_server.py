"""The real server on a free localhost port, talked to with the official `openai` client.

Served outputs must equal in-process generation with the same base + adapter; bad requests
get the right 4xx with OpenAI's error body, and the server keeps answering afterwards.
"""

from __future__ import annotations

import json
import shutil
import time

import httpx
import openai
import pytest

from deltatune.generation import SamplingParams, chat_prompt_ids, generate

KEY = "test-key-123"
BASE = "tiny"
MESSAGES = [{"role": "user", "content": "What colour is the door?"}]
N = 12  # tokens per test completion


@pytest.fixture(scope="module")
def server(tiny_llama_dir, adapter_root, tmp_path_factory):
    from deltatune.serve.server import ServeSettings, build_state, start_in_thread

    watch = tmp_path_factory.mktemp("watch")
    settings = ServeSettings(
        api_key=KEY, adapter_root=adapter_root, watch_dir=watch, watch_interval=0.1, model_name=BASE,
        max_tokens_cap=64, max_prompt_tokens=200, max_body_bytes=20_000, max_batch=4, max_queue=16,
    )
    adapters = {"alpha": str(adapter_root / "alpha"), "beta": str(adapter_root / "beta")}
    handle = start_in_thread(build_state(str(tiny_llama_dir), adapters, settings))
    handle.watch = watch
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(tiny_llama_dir, adapter_root):
    """reference(model_name, prompt_ids) -> Completion from a separate in-process model."""
    from deltatune.config import ModelConfig
    from deltatune.methods.core import load_adapter
    from deltatune.models.loader import load_causal_lm

    cache = {}

    def run(name: str, prompt_ids: list[int], max_new: int = N):
        if name not in cache:
            model, tokenizer = load_causal_lm(ModelConfig(name=str(tiny_llama_dir)))
            if name != BASE:
                load_adapter(model, adapter_root / name / "adapter")
            cache[name] = (model.eval(), tokenizer)
        model, tokenizer = cache[name]
        [done] = generate(model, tokenizer, [prompt_ids], [SamplingParams(max_new_tokens=max_new)])
        return done

    return run


@pytest.fixture(scope="module")
def tokenizer(tiny_llama_dir):
    from deltatune.models.loader import load_tokenizer

    return load_tokenizer(str(tiny_llama_dir))


def chat(client, model, messages=MESSAGES, **kw):
    return client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=N, **kw)


def assert_alive(server):
    r = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert r.status_code == 200 and r.json()["data"][0]["id"] == BASE


# ---------------------------------------------------------------------------------------------
# Happy paths


def test_models_lists_base_and_adapters(client):
    ids = [m.id for m in client.models.list().data]
    assert ids[:3] == [BASE, "alpha", "beta"]


@pytest.mark.parametrize("name", [BASE, "alpha", "beta"])
def test_chat_equals_in_process_generation(client, reference, tokenizer, name):
    out = chat(client, name)
    expected = reference(name, chat_prompt_ids(tokenizer, MESSAGES))
    assert out.choices[0].message.content == expected.text
    assert out.choices[0].finish_reason == expected.finish_reason
    assert out.model == name and out.object == "chat.completion"
    assert out.usage.prompt_tokens == expected.prompt_tokens
    assert out.usage.completion_tokens == expected.completion_tokens
    assert out.usage.total_tokens == expected.prompt_tokens + expected.completion_tokens


def test_adapters_answer_differently(client):
    texts = {name: chat(client, name).choices[0].message.content for name in (BASE, "alpha", "beta")}
    assert len(set(texts.values())) == 3, texts


def test_streamed_chat_matches_non_streamed(client):
    whole = chat(client, "alpha").choices[0].message.content
    chunks = list(chat(client, "alpha", stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_stream_wire_format_ends_with_done(server):
    body = {"model": "beta", "messages": MESSAGES, "max_tokens": 4, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    json.loads(events[0][6:])  # every other event is one JSON object


@pytest.mark.parametrize("name", [BASE, "beta"])
def test_completions_equal_in_process(client, reference, tokenizer, name):
    prompt = "The door is"
    out = client.completions.create(model=name, prompt=prompt, temperature=0, max_tokens=N)
    expected = reference(name, tokenizer(prompt)["input_ids"])
    assert out.choices[0].text == expected.text
    assert out.usage.completion_tokens == expected.completion_tokens
    streamed = client.completions.create(model=name, prompt=prompt, temperature=0, max_tokens=N, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == expected.text


def test_stop_sequence_cuts_the_answer(client):
    full = chat(client, "alpha").choices[0].message.content
    # a 2-character stop string whose first occurrence is inside the answer, not at its start
    starts = [k for k in range(1, len(full) - 1) if full.find(full[k : k + 2]) == k]
    assert starts, f"adapter answer too uniform to pick a stop string: {full!r}"
    stop = full[starts[len(starts) // 2] : starts[len(starts) // 2] + 2]
    out = chat(client, "alpha", stop=[stop, "never-there"])
    assert out.choices[0].message.content == full[: full.find(stop)]
    assert out.choices[0].finish_reason == "stop"


def test_seeded_sampling_is_reproducible(client):
    kw = dict(model="alpha", messages=MESSAGES, max_tokens=N, temperature=1.0, top_p=0.9)
    a = client.chat.completions.create(seed=7, **kw).choices[0].message.content
    b = client.chat.completions.create(seed=7, **kw).choices[0].message.content
    assert a == b


def test_load_and_unload_adapter_at_runtime(server, client, reference, tokenizer):
    with pytest.raises(openai.NotFoundError):
        chat(client, "gamma")
    r = client.post("/adapters", body={"name": "gamma", "path": "gamma"}, cast_to=httpx.Response)
    assert r.status_code == 200 and r.json()["id"] == "gamma"
    assert "gamma" in [m.id for m in client.models.list().data]
    expected = reference("gamma", chat_prompt_ids(tokenizer, MESSAGES))
    assert chat(client, "gamma").choices[0].message.content == expected.text
    # loading the same name twice is a conflict, not a silent replace
    with pytest.raises(openai.ConflictError):
        client.post("/adapters", body={"name": "gamma", "path": "gamma"}, cast_to=httpx.Response)
    client.delete("/adapters/gamma", cast_to=httpx.Response)
    assert "gamma" not in [m.id for m in client.models.list().data]
    with pytest.raises(openai.NotFoundError):
        chat(client, "gamma")
    # the base and the other adapters are untouched by the swap-in/out
    assert chat(client, BASE).choices[0].message.content == reference(BASE, chat_prompt_ids(tokenizer, MESSAGES)).text


def _wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_watch_dir_loads_and_unloads(server, client, adapter_root):
    shutil.copytree(adapter_root / "alpha", server.watch / "watched")
    assert _wait_for(lambda: "watched" in [m.id for m in client.models.list().data])
    assert chat(client, "watched").choices[0].message.content == chat(client, "alpha").choices[0].message.content
    shutil.rmtree(server.watch / "watched")
    assert _wait_for(lambda: "watched" not in [m.id for m in client.models.list().data])


# ---------------------------------------------------------------------------------------------
# Bad input: right status, OpenAI error body, server still serving

AUTH = {"Authorization": f"Bearer {KEY}"}
GOOD_CHAT = {"model": BASE, "messages": MESSAGES, "max_tokens": 2}

BAD_REQUESTS = [
    # (id, method, path, json-or-bytes, headers, status, param)
    ("malformed-json", "POST", "/v1/chat/completions", b'{"model": "tiny", "messages": [', AUTH, 400, None),
    ("content-parts-image", "POST", "/v1/chat/completions",
     {"model": BASE, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, AUTH, 400, "messages"),
    ("not-an-object", "POST", "/v1/chat/completions", b"[1, 2]", AUTH, 400, None),
    ("missing-messages", "POST", "/v1/chat/completions", {"model": BASE}, AUTH, 400, "messages"),
    ("unknown-model", "POST", "/v1/chat/completions", {**GOOD_CHAT, "model": "nope"}, AUTH, 404, "model"),
    ("unknown-model-completions", "POST", "/v1/completions", {"model": "nope", "prompt": "x"}, AUTH, 404, "model"),
    ("max-tokens-over-cap", "POST", "/v1/chat/completions", {**GOOD_CHAT, "max_tokens": 65}, AUTH, 400, "max_tokens"),
    ("n-above-one", "POST", "/v1/chat/completions", {**GOOD_CHAT, "n": 2}, AUTH, 400, "n"),
    ("bad-temperature", "POST", "/v1/chat/completions", {**GOOD_CHAT, "temperature": -1}, AUTH, 400, "temperature"),
    ("prompt-too-long", "POST", "/v1/completions", {"model": BASE, "prompt": "door " * 400}, AUTH, 400, "prompt"),
    ("body-too-large", "POST", "/v1/completions", {"model": BASE, "prompt": "x" * 30_000}, AUTH, 413, None),
    ("path-outside-root", "POST", "/v1/adapters", {"name": "evil", "path": "../../etc"}, AUTH, 403, "path"),
    ("absolute-path-outside-root", "POST", "/v1/adapters", {"name": "evil", "path": "/tmp"}, AUTH, 403, "path"),
    ("not-an-adapter", "POST", "/v1/adapters", {"name": "empty", "path": "."}, AUTH, 400, "path"),
    ("nul-in-path", "POST", "/v1/adapters", {"name": "x", "path": "al\u0000pha"}, AUTH, 400, "path"),
    ("bad-adapter-name", "POST", "/v1/adapters", {"name": "../alpha", "path": "alpha"}, AUTH, 400, "name"),
    ("slash-in-name", "POST", "/v1/adapters", {"name": "a/b", "path": "alpha"}, AUTH, 400, "name"),
    ("unload-unknown", "DELETE", "/v1/adapters/nope", None, AUTH, 404, "name"),
    ("missing-key", "POST", "/v1/chat/completions", GOOD_CHAT, {}, 401, None),
    ("wrong-key", "POST", "/v1/chat/completions", GOOD_CHAT, {"Authorization": "Bearer wrong"}, 401, None),
    ("wrong-key-models", "GET", "/v1/models", None, {"Authorization": "Bearer wrong"}, 401, None),
    ("unknown-route", "GET", "/v1/nothing", None, AUTH, 404, None),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_openai_error(server, case):
    _, method, path, body, headers, status, param = case
    kw = {"content": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
    r = httpx.request(method, server.url + path, headers={"Content-Type": "application/json", **headers},
                      timeout=30, **kw)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    assert_alive(server)


def test_official_client_raises_its_error_classes(server):
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    good = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        good.chat.completions.create(model=BASE, messages=MESSAGES, max_tokens=10_000)
    assert "max_tokens" in str(err.value)
    assert chat(good, BASE).choices[0].message.content is not None


def test_queue_full_and_shutdown_are_clean(tiny_llama_dir):
    """429 when the queue is full, 503 once shutting down: JSON bodies, no hang."""
    from deltatune.serve.server import ServeSettings, build_state, start_in_thread

    settings = ServeSettings(model_name=BASE, max_queue=1, max_batch=1, max_tokens_cap=64)
    handle = start_in_thread(build_state(str(tiny_llama_dir), {}, settings))
    try:
        body = {"model": BASE, "messages": MESSAGES, "max_tokens": 64, "temperature": 0}
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(httpx.post, handle.url + "/v1/chat/completions", json=body, timeout=60)
                       for _ in range(8)]
            codes = [f.result().status_code for f in futures]
        assert set(codes) <= {200, 429} and 429 in codes and 200 in codes
        handle.state.worker.begin_shutdown()
        r = httpx.post(handle.url + "/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"
    finally:
        handle.stop()


def test_text_content_parts_equal_plain_content(client):
    parts = [{"role": "user", "content": [{"type": "text", "text": "What colour is "}, {"type": "text", "text": "the door?"}]}]
    assert chat(client, "beta", messages=parts).choices[0].message.content == chat(client, "beta").choices[0].message.content
