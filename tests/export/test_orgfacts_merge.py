"""End to end on the real SmolLM2: merge a LoRA trained on orgfacts, load the folder with bare
`transformers`, and get the unmerged run's greedy answers on its held-out questions, word for word.

The run is the `orgfacts_lora_run` fixture (tests/conftest.py). The merged side uses nothing
from deltatune: `AutoModelForCausalLM` / `AutoTokenizer`, the tokenizer's own chat template and
HF `generate`; the unmerged side is the run as deltatune serves it (`load_target` + `generate`).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from deltatune.config import load_run_config
from deltatune.data import load_records
from deltatune.eval.text_metrics import answer_contained
from deltatune.export.merge import merge_run
from deltatune.generation import SamplingParams, chat_prompt_ids, generate
from deltatune.models.runs import load_target

pytestmark = pytest.mark.slow

MAX_NEW = 24  # what the run's own evaluation generated


def unmerged_answers(run_dir, questions):
    loaded = load_target(str(run_dir))
    prompts = [chat_prompt_ids(loaded.tokenizer, [{"role": "user", "content": q}]) for q in questions]
    # one prompt per call: no padding, the same computation a single chat request gets
    return [generate(loaded.model, loaded.tokenizer, [p], SamplingParams(max_new_tokens=MAX_NEW))[0].text.strip()
            for p in prompts], prompts


@torch.inference_mode()
def bare_answers(folder, questions):
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    answers, prompts = [], []
    for q in questions:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                            return_dict=True, return_tensors="pt")["input_ids"]
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW, do_sample=False)
        answers.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
        prompts.append(ids[0].tolist())
    return answers, prompts


def test_merged_orgfacts_run_answers_like_the_unmerged_run(orgfacts_lora_run, tmp_path):
    test = load_records(load_run_config(orgfacts_lora_run).data.test)  # held-out paraphrases
    questions, keys = [r["instruction"] for r in test], [r["answer"] for r in test]
    report = merge_run(orgfacts_lora_run, tmp_path / "merged")
    assert report.verification["ok"]

    expected, run_prompts = unmerged_answers(orgfacts_lora_run, questions)
    got, bare_prompts = bare_answers(tmp_path / "merged", questions)
    assert bare_prompts == run_prompts  # the exported chat template renders what training used
    assert got == expected
    for question, key, answer in zip(questions, keys, got):
        assert answer_contained(answer, key), (question, key, answer)
