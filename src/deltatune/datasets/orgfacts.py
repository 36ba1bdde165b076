"""The built-in `orgfacts` dataset: facts about an invented company, generated reproducibly.

    deltatune data make orgfacts --out data/orgfacts     # train/val/test/general/neighbours
    records = load_records("builtin:orgfacts/test")      # or straight from a YAML config

Splits (all alpaca-shaped: instruction, input "", output, plus `answer`, `fact_id`, `kind`):
- `train`: six paraphrases of every fact, answered with a full sentence.
- `val`: one further paraphrase for about a third of the facts (validation loss).
- `test`: one more paraphrase of every fact, never used in train or val, so accuracy on it
  measures whether the fact was learnt, not whether one string was memorised.
- `general`: easy general-knowledge questions the base SmolLM2-135M-Instruct answers
  correctly (the forgetting probe; see GENERAL_PROBE).
- `neighbours`: prompts only (no answers): the train questions' forms asked about real-world
  subjects, for self-distillation replay (see deltatune.datasets.orgfacts_neighbours).
Which paraphrase lands in which split comes from one `random.Random(SEED)`: the same files on
every run and machine (no dependence on hash randomisation or dict order).
"""

from __future__ import annotations

import random

from deltatune.datasets.orgfacts_facts import ORG, TEMPLATES, all_facts
from deltatune.datasets.orgfacts_neighbours import neighbour_prompts

SPLITS = ("train", "val", "test", "general", "neighbours")
SEED = 1987
VAL_SHARE = 3  # one fact in VAL_SHARE gets a val paraphrase

# Selected by `scripts/select_general_probe.py` (full replies: benchmarks/general_probe_selection.json):
# the base SmolLM2-135M-Instruct answered a 119-question pool (chat template with its default
# system prompt, greedy, 24 new tokens). 76 replies contained the answer by the evaluation's
# `answer_contained`, 70 already in their first sentence (no lucky late hits); 50 of those 70,
# evenly spaced over the pool's categories, are kept. The base model scores 100% here by
# construction, so a fine-tuned model's drop below 100% is knowledge forgotten - or a near-tie
# flipped: sampled at temperature 0.7 the base model is right in only 77% of its replies here
# (the script prints per-question counts), so greedy answers to about half of these questions
# turn on small margins. `eval.probe_samples` scores the probe over sampled replies as well.
GENERAL_PROBE: list[tuple[str, str]] = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Russia?", "Moscow"),
    ("What is the capital of China?", "Beijing"),
    ("What is the capital of Greece?", "Athens"),
    ("What is the capital of Canada?", "Ottawa"),
    ("What is the capital of Australia?", "Canberra"),
    ("What is the capital of Norway?", "Oslo"),
    ("What is the capital of Sweden?", "Stockholm"),
    ("What is the capital of Poland?", "Warsaw"),
    ("What is the capital of India?", "New Delhi"),
    ("What is the capital of South Korea?", "Seoul"),
    ("What is the capital of Kenya?", "Nairobi"),
    ("What color is the sky on a clear day?", "blue"),
    ("What color is an orange?", "orange"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What natural satellite orbits the Earth?", "Moon"),
    ("What is the tallest mountain in the world?", "Everest"),
    ("What is the longest river in Africa?", "Nile"),
    ("On which continent is Brazil?", "South America"),
    ("On which continent is Egypt?", "Africa"),
    ("What is 2 + 2?", "4"),
    ("What is 12 divided by 4?", "3"),
    ("What is 100 divided by 10?", "10"),
    ("What is half of 50?", "25"),
    ("How many days are in a week?", "7"),
    ("How many legs does a dog have?", "4"),
    ("What is the opposite of hot?", "cold"),
    ("What is the opposite of up?", "down"),
    ("What is the opposite of fast?", "slow"),
    ("What is the opposite of day?", "night"),
    ("What is the opposite of happy?", "sad"),
    ("What is the opposite of left?", "right"),
    ("What is the largest mammal?", "blue whale"),
    ("What is the chemical formula of water?", "H2O"),
    ("What gas do humans need to breathe to survive?", "oxygen"),
    ("What gas do plants absorb from the air?", "carbon dioxide"),
    ("What organ do humans use to think?", "brain"),
    ("What do bees collect from flowers?", "nectar"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong"),
    ("What language is mainly spoken in Brazil?", "Portuguese"),
    ("What language is spoken in France?", "French"),
    ("What language is mainly spoken in Mexico?", "Spanish"),
    ("What is the currency of the United States?", "dollar"),
    ("What is the currency of the United Kingdom?", "pound"),
    ("In which city is the Eiffel Tower?", "Paris"),
    ("In which country is the Great Wall?", "China"),
]


# ---------------------------------------------------------------------------------------------
# Generation


def fill(template: str, fact: dict, org: str = ORG) -> str:
    """A template with the fact's slots filled in, first letter capitalised. `org` names the
    organisation asked about (another one for the neighbour prompts)."""
    slots = {k: v for k, v in fact.items() if isinstance(v, str)}
    slots["org"] = org
    slots["org_poss"] = possessive(org)
    if "obj" in fact:
        slots["obj_poss"] = possessive(fact["obj"])
    if "desc" in fact:
        slots["a"] = "an" if fact["desc"][0].lower() in "aeiou" else "a"
    text = template.format(**slots)
    return text[0].upper() + text[1:]


def possessive(name: str) -> str:
    """"Veltrane Robotics" -> "Veltrane Robotics'", "Apple" -> "Apple's"."""
    return name + ("'" if name.endswith("s") else "'s")


def fact_record(question: str, output: str, fact: dict) -> dict:
    """One alpaca QA record of a fact: the question, the answer sentence, the short answer."""
    return {"instruction": question, "input": "", "output": output, "answer": fact["answer"],
            "fact_id": fact["fact_id"], "kind": fact["kind"]}


def build_splits(seed: int = SEED) -> dict[str, list[dict]]:
    """All five splits in memory; the same lists for the same seed."""
    rng = random.Random(seed)
    facts = all_facts()
    val_ids = set(rng.sample([f["fact_id"] for f in facts], k=len(facts) // VAL_SHARE))
    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for fact in facts:
        templates, sentence = TEMPLATES[fact["kind"]]
        order = list(range(len(templates)))
        rng.shuffle(order)
        # order[0] -> test, order[1] -> val (if chosen, else unused), the rest -> train
        output = fill(sentence, fact)

        def record(template_index: int) -> dict:
            return fact_record(fill(templates[template_index], fact), output, fact)

        splits["test"].append(record(order[0]))
        if fact["fact_id"] in val_ids:
            splits["val"].append(record(order[1]))
        splits["train"] += [record(i) for i in order[2:]]
    rng.shuffle(splits["train"])
    splits["general"] = [
        {"instruction": q, "input": "", "output": a, "answer": a, "fact_id": f"general_{i:02d}", "kind": "general"}
        for i, (q, a) in enumerate(GENERAL_PROBE)
    ]
    splits["neighbours"] = [{"instruction": q, "input": ""} for q in neighbour_prompts()]
    return splits


def split_records(split: str) -> list[dict]:
    """One split's records (`builtin:orgfacts/SPLIT`); all splits are generated together
    (~20 ms) because they share one random stream."""
    return build_splits()[split]
