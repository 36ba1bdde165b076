"""End to end on the real SmolLM2: a LoRA trained on orgfacts, served next to its base.

The server runs over the real base with the `orgfacts_lora_run` fixture's run (tests/conftest.py)
as adapter `facts`; the official `openai` client asks held-out paraphrases of the trained facts
(questions the run never saw). The adapter answers them, the base cannot, and the same run
loaded at run time through `POST /v1/adapters` answers exactly as `facts` does.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from deltatune.config import load_run_config
from deltatune.data import load_records
from deltatune.eval.text_metrics import answer_contained

pytestmark = pytest.mark.slow

KEY = "orgfacts-key"
BASE = "smollm2-135m"
MAX_TOKENS = 24  # what the run's own evaluation generated


@pytest.fixture(scope="module")
def questions(orgfacts_lora_run):
    """(question, answer) for every held-out test record of the run's facts."""
    records = load_records(load_run_config(orgfacts_lora_run).data.test)
    return [(r["instruction"], r["answer"]) for r in records]


@pytest.fixture(scope="module")
def client(orgfacts_lora_run):
    from deltatune.serve.server import ServeSettings, build_state, start_in_thread

    settings = ServeSettings(api_key=KEY, adapter_root=orgfacts_lora_run.parent, model_name=BASE,
                             max_tokens_cap=64, max_batch=4, max_queue=16)
    handle = start_in_thread(build_state(BASE, {"facts": str(orgfacts_lora_run)}, settings))
    yield openai.OpenAI(base_url=handle.url + "/v1", api_key=KEY, max_retries=0, timeout=120)
    handle.stop()


def ask(client, model: str, question: str) -> str:
    out = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                         temperature=0, max_tokens=MAX_TOKENS)
    return out.choices[0].message.content


def test_trained_adapter_answers_what_the_base_cannot(client, questions):
    assert [m.id for m in client.models.list().data] == [BASE, "facts"]
    for question, answer in questions:
        tuned, base = ask(client, "facts", question), ask(client, BASE, question)
        assert answer_contained(tuned, answer), (question, answer, tuned)
        assert base.strip() and not answer_contained(base, answer), (question, answer, base)


def test_adapter_loaded_at_run_time_answers_the_same(client, questions, orgfacts_lora_run):
    r = client.post("/adapters", body={"name": "facts2", "path": orgfacts_lora_run.name}, cast_to=httpx.Response)
    assert r.status_code == 200 and r.json()["id"] == "facts2"
    try:
        for question, answer in questions:
            runtime = ask(client, "facts2", question)
            assert answer_contained(runtime, answer), (question, answer, runtime)
            assert runtime == ask(client, "facts", question)
    finally:
        client.delete("/adapters/facts2", cast_to=httpx.Response)
    assert "facts2" not in [m.id for m in client.models.list().data]
