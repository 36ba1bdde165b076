"""Self-distillation replay: the base model's own answers, cached, mixed into training."""

from __future__ import annotations

import json
import re

import pytest
import torch

from deltatune.data.sources import load_records
from deltatune.datasets.general_prompts import GENERAL_PROMPTS
from deltatune.datasets.orgfacts import GENERAL_PROBE
from deltatune.replay import answers
from deltatune.replay.answers import self_replay_records
from deltatune.errors import DeltatuneError
from deltatune.eval.text_metrics import normalise

PROBE_TEMPLATES = ("what is the capital of", "what is the opposite of", "what is the currency of",
                   "what language", "in which city is", "in which country is", "who wrote",
                   "who painted", "who was the first", "on which continent", "what color is",
                   "what colour is", "what is the largest", "what is the tallest",
                   "what is the longest", "what gas", "how many legs", "which planet",
                   "what natural satellite", "what organ", "what do bees", "what is the chemical",
                   "what is half of")
PROBE_WORDS = ("divided by", "language", "currency", "capital")


@pytest.mark.parametrize("spec", ["builtin:general/prompts", "builtin:orgfacts/neighbours"])
def test_replay_prompts_stay_clear_of_the_forgetting_probe(spec):
    """The probe must measure transfer, not rehearsal: no probe question or template replayed."""
    probe = {normalise(q) for q, _ in GENERAL_PROBE}
    prompts = [r["instruction"] for r in load_records(spec)]
    assert len(prompts) >= 100 and len(set(prompts)) == len(prompts)
    for prompt in prompts:
        assert normalise(prompt) not in probe, prompt
        assert not normalise(prompt).startswith(PROBE_TEMPLATES), prompt
        if normalise(prompt).startswith(("what", "which", "who", "how many", "in ")):  # questions
            assert not any(word in normalise(prompt) for word in PROBE_WORDS), prompt
    if spec == "builtin:general/prompts":
        assert prompts == GENERAL_PROMPTS


def test_neighbour_prompts_ask_the_training_forms_about_other_subjects():
    """Every neighbour is an orgfacts question form with real-world subjects in the slots, and
    none names the probe's subjects (its capitals' countries, its landmarks, its people)."""
    from deltatune.datasets.orgfacts_facts import ORG, TEMPLATES

    def form(template: str) -> re.Pattern:
        pattern = re.sub(r"\\\{\w+\\\}", ".+", re.escape(template))
        return re.compile(pattern, re.IGNORECASE)

    forms = [form(t) for templates, _ in TEMPLATES.values() for t in templates]
    neighbours = [r["instruction"] for r in load_records("builtin:orgfacts/neighbours")]
    for prompt in neighbours:
        assert any(f.fullmatch(prompt) for f in forms), prompt
        assert ORG.lower() not in prompt.lower(), prompt
    kinds_asked = {kind for kind, (templates, _) in TEMPLATES.items()
                   if any(form(t).fullmatch(n) for t in templates for n in neighbours)}
    assert kinds_asked == set(TEMPLATES)
    probe_subjects = ("france", "germany", "australia", "canada", "india", "egypt", "brazil", "kenya",
                      "eiffel", "great wall", "moon", "mona lisa", "romeo", "everest", "nile", "mars")
    for prompt in neighbours:
        assert not any(subject in prompt.lower() for subject in probe_subjects), prompt


@pytest.fixture(scope="module")
def smollm2(smollm2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(smollm2_dir).eval(), AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.mark.slow
def test_replay_answers_are_the_base_models_own_and_cached(smollm2, tmp_path, monkeypatch):
    from deltatune.generation import SamplingParams, chat_prompt_ids, generate

    monkeypatch.setenv("DELTATUNE_HOME", str(tmp_path / "home"))
    model, tokenizer = smollm2
    prompts = tmp_path / "prompts.jsonl"
    questions = ["How many sides does a square have?", "Tell me a short joke.", "What is frozen water called?"]
    prompts.write_text("".join(json.dumps({"instruction": q}) + "\n" for q in questions))

    records = self_replay_records(model, tokenizer, str(prompts), max_new_tokens=48)
    assert 1 <= len(records) <= len(questions)
    for record in records:
        user, answer = record["messages"][0]["content"], record["messages"][-1]["content"]
        ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": user}])
        direct = generate(model, tokenizer, [ids], SamplingParams(max_new_tokens=48))[0]
        assert direct.finish_reason == "stop" and answer == direct.text.strip()
    assert len(list((tmp_path / "home" / "replay").glob("*.jsonl"))) == 1
    (sidecar,) = (tmp_path / "home" / "replay").glob("*.meta.json")  # what `deltatune estimate` finds it by
    meta = json.loads(sidecar.read_text())
    assert meta["model"] == model.config._name_or_path and meta["max_new_tokens"] == 48
    assert meta["base"] == {"dtype": "float32", "quantised_bits": None}
    assert meta["prompts_sha256"] == answers.prompts_digest(questions) and meta["records"] == len(records)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a cached replay must not be generated again")

    monkeypatch.setattr(answers, "_generate", must_not_run)
    assert [r["messages"] for r in self_replay_records(model, tokenizer, str(prompts), max_new_tokens=48)] == \
        [r["messages"] for r in records]
    with torch.no_grad():  # other weights -> other key -> generated again
        model.model.layers[-1].mlp.down_proj.weight.mul_(1.01)
    try:
        with pytest.raises(AssertionError, match="must not be generated again"):
            self_replay_records(model, tokenizer, str(prompts), max_new_tokens=48)
    finally:
        with torch.no_grad():
            model.model.layers[-1].mlp.down_proj.weight.div_(1.01)


@pytest.mark.slow
def test_replay_that_never_finishes_is_an_error(smollm2, tmp_path, monkeypatch):
    monkeypatch.setenv("DELTATUNE_HOME", str(tmp_path / "home"))
    model, tokenizer = smollm2
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"instruction": "Explain how a rainbow forms."}) + "\n")
    with pytest.raises(DeltatuneError, match="replay_max_new_tokens"):
        self_replay_records(model, tokenizer, str(prompts), max_new_tokens=2)
