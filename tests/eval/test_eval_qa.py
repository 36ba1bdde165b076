"""qa_accuracy: hand-counted scores with a scripted generator, and end to end on the tiny model."""

import copy

import pytest
import torch

import deltatune.eval.qa as qa
from deltatune.errors import DeltatuneError
from deltatune.eval.text_metrics import normalise
from deltatune.generation import Completion

RECORDS = [
    {"instruction": "Who founded Acme?", "answer": "Maria Lopez", "output": "Acme was founded by Maria Lopez."},
    {"instruction": "Where is Acme based?", "answer": "Oslo"},
    {"instruction": "What does the basic plan cost?", "output": "$1,200"},
    {"instruction": "When did Acme open?", "input": "Give the year.", "answer": "2012"},
]
# what the scripted "model" says for each question (keyed by the question text)
SCRIPT = {
    "Who founded Acme?": "Maria Lopez.",  # exact (after normalising) and contained
    "Where is Acme based?": "It is based in Oslo, Norway.",  # contained only
    "What does the basic plan cost?": "1200",  # exact: "$1,200" normalises to "1200"
    "When did Acme open?\n\nGive the year.": "In 12 AD",  # neither ("12" is not "2012")
}


def test_hand_counted_scores_with_scripted_generation(tiny, monkeypatch):
    _, tokenizer = tiny
    calls = []

    def scripted(model, tok, prompts, params, on_token=None):
        calls.append(len(prompts))
        texts = [tok.decode(p) for p in prompts]
        out = []
        for text in texts:
            question = next(q for q in SCRIPT if q in text)
            out.append(Completion(SCRIPT[question], [], "stop", len(text), 1))
        return out

    monkeypatch.setattr(qa, "generate", scripted)
    got = qa.qa_accuracy(None, tokenizer, RECORDS, system_prompt="Be brief.", max_new_tokens=8, batch_size=3)
    assert got["n"] == 4
    assert got["exact_match"] == pytest.approx(2 / 4)
    assert got["contains"] == pytest.approx(3 / 4)
    assert calls == [3, 1]  # batched
    assert got["examples"][1] == {
        "question": "Where is Acme based?",
        "answer": "Oslo",
        "prediction": "It is based in Oslo, Norway.",
        "contains": True,
    }


class ForcedLM(torch.nn.Module):
    """The tiny Llama (real forward, real KV cache) with its logits forced to spell `text`
    and then EOS: a model whose answers are known, driven through the real decoding loop and
    deltatune's forward path (decoder, then the output head)."""

    def __init__(self, model, tokenizer, text, strength: float = 1000.0):
        super().__init__()
        self.strength = strength  # added to the scripted token's logit
        self.inner = copy.deepcopy(model)  # the hook below must not reach the shared fixture
        self.script = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        self.step = 0  # decoding steps since the prefill
        self.inner.get_decoder().register_forward_pre_hook(self._count_steps, with_kwargs=True)

    def _count_steps(self, module, args, kwargs):
        cache = kwargs.get("cache")
        self.step = 0 if cache is None or cache.get_seq_length() == 0 else self.step + 1

    def get_decoder(self):
        return self.inner.get_decoder()

    def get_output_embeddings(self):
        def forced_head(hidden):
            logits = self.inner.get_output_embeddings()(hidden).clone()
            logits[..., self.script[min(self.step, len(self.script) - 1)]] += self.strength
            return logits

        return forced_head


def test_end_to_end_with_a_forced_tiny_model(tiny):
    model, tokenizer = tiny
    forced = ForcedLM(model, tokenizer, " Paris is nice")
    records = [
        {"instruction": "Which city?", "answer": "paris is nice!"},  # exact + contains
        {"instruction": "And the capital of France, please, in one word?", "answer": "Paris"},  # contains
        {"instruction": "Where is the Louvre?", "answer": "Lyon"},  # neither
    ]
    got = qa.qa_accuracy(forced, tokenizer, records, max_new_tokens=10, batch_size=2)
    assert [e["prediction"] for e in got["examples"]] == ["Paris is nice"] * 3
    assert got["exact_match"] == pytest.approx(1 / 3)
    assert got["contains"] == pytest.approx(2 / 3)


def test_record_without_reference_is_an_error(tiny):
    _, tokenizer = tiny
    with pytest.raises(DeltatuneError, match="neither `answer` nor `output`"):
        qa.qa_accuracy(None, tokenizer, [{"instruction": "Q?", "_origin": "f.jsonl:3"}])


def test_sampled_contains_counts_every_seeded_reply(tiny, monkeypatch):
    """Hand count: a scripted sampler right on seeds 0 and 2 only -> 2 of 3 replies per question."""
    _, tokenizer = tiny
    seen = []

    def scripted(model, tok, prompts, params, on_token=None):
        out = []
        for prompt, p in zip(prompts, params):
            seen.append((tok.decode(prompt), p.seed, p.temperature))
            out.append(Completion("Oslo, of course." if p.seed in (0, 2) else "Bergen.", [], "stop", 1, 1))
        return out

    monkeypatch.setattr(qa, "generate", scripted)
    records = [{"instruction": "Where is Acme based?", "answer": "Oslo"},
               {"instruction": "Where is the Acme lab?", "answer": "Oslo"}]
    got = qa.sampled_contains(None, tokenizer, records, samples=3, temperature=0.5, batch_size=4)
    assert got == pytest.approx(4 / 6)
    assert sorted(seed for _, seed, _ in seen) == [0, 0, 1, 1, 2, 2]
    assert {t for _, _, t in seen} == {0.5}


def test_sampled_contains_is_reproducible_and_matches_greedy_when_cold(tiny):
    """Real decoding loop, a tiny model nudged (not forced) towards " Paris is nice": greedy
    says it; sampled near temperature 0 every reply says it too (score = greedy contains);
    sampled hot the replies stray, and the same seeds give the same score twice."""
    model, tokenizer = tiny
    nudged = ForcedLM(model, tokenizer, " Paris is nice", strength=8.0)
    records = [{"instruction": "Which city?", "answer": "Paris"}, {"instruction": "Where?", "answer": "Paris"}]
    assert qa.qa_accuracy(nudged, tokenizer, records, max_new_tokens=4)["contains"] == 1.0
    assert qa.sampled_contains(nudged, tokenizer, records, samples=2, temperature=1e-6, max_new_tokens=4) == 1.0
    hot = [qa.sampled_contains(nudged, tokenizer, records, samples=4, temperature=4.0, max_new_tokens=4)
           for _ in range(2)]
    assert hot[0] == hot[1] and hot[0] < 1.0
