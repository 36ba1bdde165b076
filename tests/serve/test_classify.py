"""`POST /v1/classify`: `recipe: cls` runs served by a real server beside a generation base, talked
to over HTTP with `httpx` and the official `openai` client. Served labels and probabilities
must equal the in-process classifier's; bad requests get OpenAI's error body."""

from __future__ import annotations

import httpx
import openai
import pytest
from cls_helpers import cls_config, keyword_files, make_tiny_bert

from deltatune.classify.predictor import Classifier
from deltatune.errors import DeltatuneError

KEY = "cls-key-1"
TEXTS = ["a cat near the river", "the old bus", "banana and plum today"]


@pytest.fixture(scope="module")
def cls_runs(tmp_path_factory, tiny_llama_dir):
    """Two finished classifier runs: LoRA on a tiny BERT, and prompt tuning on the tiny Llama."""
    from deltatune.recipes import cls

    root = tmp_path_factory.mktemp("cls-serve")
    bert = make_tiny_bert(root / "bert")
    files = keyword_files(root / "data")
    quiet = {"eval": {"before_after": False}}
    return {
        "bert": cls.run(cls_config(bert, files, root / "bert-run", train={"max_steps": 30}, **quiet)),
        "llama": cls.run(cls_config(tiny_llama_dir, files, root / "llama-run",
                                    method={"name": "prompt", "num_virtual_tokens": 4},
                                    train={"max_steps": 10, "lr": 3e-3}, **quiet)),
    }


@pytest.fixture(scope="module")
def server(tiny_llama_dir, cls_runs):
    from deltatune.serve.server import ServeSettings, build_state, start_in_thread

    settings = ServeSettings(api_key=KEY, model_name="tiny", max_body_bytes=50_000)
    # the llama classifier comes in through --adapter: a cls run is served as a classifier
    state = build_state(str(tiny_llama_dir), {"topics-llama": str(cls_runs["llama"])}, settings,
                        classifiers={"topics": str(cls_runs["bert"])})
    handle = start_in_thread(state)
    yield handle
    handle.stop()


def _post(server, body, key=KEY):
    return httpx.post(server.url + "/v1/classify", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=60)


@pytest.mark.parametrize("name,run", [("topics", "bert"), ("topics-llama", "llama")])
def test_served_labels_equal_in_process(server, cls_runs, name, run):
    reply = _post(server, {"model": name, "input": TEXTS})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    expected = Classifier.load(cls_runs[run]).predict(TEXTS)
    assert body["object"] == "list" and body["model"] == name and body["id"].startswith("clf-")
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    for item, want in zip(body["data"], expected):
        assert item["object"] == "classification"
        assert item["label"] == want.label
        assert item["score"] == pytest.approx(want.score, abs=1e-6)
        assert list(item["scores"]) == ["animal", "fruit", "vehicle"]
        assert sum(item["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert item["score"] == max(item["scores"].values())
    assert body["usage"]["prompt_tokens"] == sum(p.tokens for p in expected) > 0


def test_a_single_string_and_the_openai_client(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    cards = {m.id: m for m in client.models.list()}
    assert {"tiny", "topics", "topics-llama"} <= set(cards)
    assert cards["topics"].model_extra["kind"] == "classifier"
    assert cards["topics"].model_extra["labels"] == ["animal", "fruit", "vehicle"]
    body = client.post("/classify", body={"model": "topics", "input": TEXTS[0]}, cast_to=httpx.Response).json()
    listed = _post(server, {"model": "topics", "input": [TEXTS[0]]}).json()
    assert len(body["data"]) == 1 and body["data"][0]["label"] == listed["data"][0]["label"]
    assert body["data"][0]["scores"] == listed["data"][0]["scores"]


def test_bad_requests(server):
    assert _post(server, {"model": "topics", "input": "x"}, key="wrong").status_code == 401
    missing = _post(server, {"model": "nope", "input": "x"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    generator = _post(server, {"model": "tiny", "input": "x"})
    assert generator.status_code == 400 and generator.json()["error"]["code"] == "not_a_classifier"
    for bad in ({"model": "topics", "input": []}, {"model": "topics", "input": ["ok", "  "]},
                {"model": "topics"}, {"model": "topics", "input": [1, 2]}):
        reply = _post(server, bad)
        assert reply.status_code == 400, bad
        assert reply.json()["error"]["type"] == "invalid_request_error"
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError, match="is a classifier"):
        client.chat.completions.create(model="topics", messages=[{"role": "user", "content": "hi"}])
    # the server still answers afterwards, generation included
    assert _post(server, {"model": "topics", "input": "a dog"}).status_code == 200
    reply = client.completions.create(model="tiny", prompt="Hello", max_tokens=2, temperature=0)
    assert reply.choices[0].finish_reason in ("length", "stop")


def test_classifiers_only_needs_no_base(cls_runs):
    from deltatune.serve.server import ServeSettings, build_state, start_in_thread

    handle = start_in_thread(build_state(None, {}, ServeSettings(), classifiers={"topics": str(cls_runs["bert"])}))
    try:
        models = httpx.get(handle.url + "/v1/models", timeout=30).json()["data"]
        assert [m["id"] for m in models] == ["topics"]
        reply = httpx.post(handle.url + "/v1/classify", json={"model": "topics", "input": "a goat"}, timeout=60)
        assert reply.status_code == 200 and reply.json()["data"][0]["label"] in ("animal", "fruit", "vehicle")
        chat = httpx.post(handle.url + "/v1/chat/completions", timeout=30,
                          json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 404
    finally:
        handle.stop()


def test_start_up_errors(cls_runs, tiny_llama_dir, tmp_path):
    from deltatune.serve.server import ServeSettings, build_state

    with pytest.raises(DeltatuneError, match="nothing to serve"):
        build_state(None, {}, ServeSettings())
    with pytest.raises(DeltatuneError, match="not a `recipe: cls` run"):
        build_state(None, {}, ServeSettings(), classifiers={"x": str(tmp_path)})
    with pytest.raises(DeltatuneError, match="used twice"):
        build_state(str(tiny_llama_dir), {}, ServeSettings(model_name="tiny"), classifiers={"tiny": str(cls_runs["bert"])})
    with pytest.raises(DeltatuneError, match="needs a base model"):
        build_state(None, {"lora": str(tmp_path)}, ServeSettings(), classifiers={"x": str(cls_runs["bert"])})
