"""Pick the `general` forgetting probe: easy questions the base SmolLM2-135M-Instruct gets right.

    .venv/bin/python scripts/select_general_probe.py [--keep 50] [--threads 2]

Runs the real embedded model on the candidate POOL below (chat template with its default
system prompt, greedy, batched with left padding, 24 new tokens) and prints the questions
whose normalised answer is contained in the first sentence of the normalised output (a stricter
test than the evaluation's "anywhere in the reply", to skip lucky hits), as a Python list to paste
into `deltatune/datasets/orgfacts.py` (GENERAL_PROBE). Matching uses the evaluation's own
`deltatune.eval.text_metrics.answer_contained` (normalised, whole words), so the base model
scores ~100% on the kept list by construction; forgetting shows up as a drop from there.

Robustness (diagnostic; `--min-correct N` also filters): a greedy reply can be right by a
near-tie. Asked "What is 2 + 2?", the base model's first token is "The" (p=0.149) ahead of
"2" (p=0.098); "The answer ... is 4" and "2 + 2 is a classic example of ..." (no 4 within 32
tokens) are one rounding apart, so almost any change to the weights flips such an item and
the probe would count a coin toss as forgetting. The script therefore also samples `--samples`
seeded replies per question (`--temperature`, the evaluation's 32 tokens) and prints how many
contain the answer. Measured for the kept GENERAL_PROBE (10 samples at 0.7): the base model
itself is right in 77% of sampled replies, and only 24 of the 50 questions reach 9/10 (even
"capital of France": 5/10), so the greedy probe has many items that flip on near-ties, which
is why a fine-tuning seed moves it by several points. `--min-correct 9` would keep only the
robust questions (31 in the pool, fewer than the ~50 the probe needs); GENERAL_PROBE is the
greedy selection (`--min-correct 0`, the default).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from deltatune.eval.text_metrics import answer_contained

POOL = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of the United Kingdom?", "London"),
    ("What is the capital of Russia?", "Moscow"),
    ("What is the capital of China?", "Beijing"),
    ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of Greece?", "Athens"),
    ("What is the capital of Canada?", "Ottawa"),
    ("What is the capital of Australia?", "Canberra"),
    ("What is the capital of Portugal?", "Lisbon"),
    ("What is the capital of Ireland?", "Dublin"),
    ("What is the capital of Norway?", "Oslo"),
    ("What is the capital of Sweden?", "Stockholm"),
    ("What is the capital of Austria?", "Vienna"),
    ("What is the capital of Poland?", "Warsaw"),
    ("What is the capital of India?", "New Delhi"),
    ("What is the capital of South Korea?", "Seoul"),
    ("What is the capital of Thailand?", "Bangkok"),
    ("What is the capital of Kenya?", "Nairobi"),
    ("What is the capital of Argentina?", "Buenos Aires"),
    ("What is the capital of Mexico?", "Mexico City"),
    ("What is the capital of the United States?", "Washington"),
    ("What color is the sky on a clear day?", "blue"),
    ("What color is grass?", "green"),
    ("What color is snow?", "white"),
    ("What color is a ripe banana?", "yellow"),
    ("What color is coal?", "black"),
    ("What color are most strawberries?", "red"),
    ("What color do you get by mixing blue and yellow?", "green"),
    ("What color do you get by mixing red and white?", "pink"),
    ("What color is an orange?", "orange"),
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("Which planet do we live on?", "Earth"),
    ("What is the closest star to Earth?", "Sun"),
    ("What natural satellite orbits the Earth?", "Moon"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("What is the tallest mountain in the world?", "Everest"),
    ("What is the longest river in Africa?", "Nile"),
    ("What is the largest desert in Africa?", "Sahara"),
    ("On which continent is Brazil?", "South America"),
    ("On which continent is Egypt?", "Africa"),
    ("What is 2 + 2?", "4"),
    ("What is 3 + 5?", "8"),
    ("What is 10 - 3?", "7"),
    ("What is 6 times 7?", "42"),
    ("What is 9 times 9?", "81"),
    ("What is 12 divided by 4?", "3"),
    ("What is 100 divided by 10?", "10"),
    ("What is 15 + 10?", "25"),
    ("What is 5 times 5?", "25"),
    ("What is half of 50?", "25"),
    ("How many days are in a week?", "7"),
    ("How many months are in a year?", "12"),
    ("How many hours are in a day?", "24"),
    ("How many minutes are in an hour?", "60"),
    ("How many legs does a spider have?", "8"),
    ("How many legs does a dog have?", "4"),
    ("How many sides does a triangle have?", "3"),
    ("How many sides does a square have?", "4"),
    ("How many continents are there?", "7"),
    ("How many days are in a leap year?", "366"),
    ("What is the opposite of hot?", "cold"),
    ("What is the opposite of up?", "down"),
    ("What is the opposite of big?", "small"),
    ("What is the opposite of fast?", "slow"),
    ("What is the opposite of day?", "night"),
    ("What is the opposite of happy?", "sad"),
    ("What is the opposite of open?", "closed"),
    ("What is the opposite of light?", "dark"),
    ("What is the opposite of old?", "young"),
    ("What is the opposite of left?", "right"),
    ("What animal says moo?", "cow"),
    ("What animal barks?", "dog"),
    ("What animal is known as the king of the jungle?", "lion"),
    ("What is the largest mammal?", "blue whale"),
    ("What animal has a long neck and lives in Africa?", "giraffe"),
    ("What animal is known for its black and white stripes?", "zebra"),
    ("What insect makes honey?", "bee"),
    ("What is a baby cat called?", "kitten"),
    ("What is a baby dog called?", "puppy"),
    ("What bird is a symbol of peace?", "dove"),
    ("What animal lays eggs and says cluck?", "chicken"),
    ("What is the chemical formula of water?", "H2O"),
    ("What gas do humans need to breathe to survive?", "oxygen"),
    ("What gas do plants absorb from the air?", "carbon dioxide"),
    ("At what temperature in Celsius does water boil?", "100"),
    ("What is frozen water called?", "ice"),
    ("What organ pumps blood through the body?", "heart"),
    ("What organ do humans use to think?", "brain"),
    ("What do bees collect from flowers?", "nectar"),
    ("What is the main ingredient of guacamole?", "avocado"),
    ("What fruit is used to make wine?", "grape"),
    ("What do cows produce that people drink?", "milk"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong"),
    ("Who developed the theory of relativity?", "Einstein"),
    ("Who was the first President of the United States?", "George Washington"),
    ("What language is mainly spoken in Brazil?", "Portuguese"),
    ("What language is spoken in France?", "French"),
    ("What language is mainly spoken in Mexico?", "Spanish"),
    ("What is the currency of Japan?", "yen"),
    ("What is the currency of the United States?", "dollar"),
    ("What is the currency of the United Kingdom?", "pound"),
    ("In which country are the pyramids of Giza?", "Egypt"),
    ("In which city is the Eiffel Tower?", "Paris"),
    ("In which country is the Great Wall?", "China"),
    ("What is the plural of mouse?", "mice"),
    ("What is the past tense of go?", "went"),
    ("What shape has three sides?", "triangle"),
    ("What season comes after winter?", "spring"),
    ("What is the first day of the week in the United States calendar?", "Sunday"),
    ("What is the hardest natural substance?", "diamond"),
    ("What metal is liquid at room temperature?", "mercury"),
    ("How many players are on a soccer team on the field?", "11"),
]


def run(keep: int, threads: int, dump: str | None = None, batch_size: int = 16, max_new_tokens: int = 24,
        samples: int = 10, temperature: float = 0.7, min_correct: int = 0) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deltatune.models.embedded import embedded_path

    torch.set_num_threads(threads)
    folder = embedded_path("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    start, outputs = time.time(), []
    for i in range(0, len(POOL), batch_size):
        chunk = POOL[i : i + batch_size]
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q, _ in chunk
        ]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        outputs += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    sampled = _sampled_correct(model, tokenizer, samples, temperature)
    if dump:
        Path(dump).write_text(json.dumps([{"question": q, "answer": a, "output": o, "sampled_correct": n, "samples": samples}
                                          for (q, a), o, n in zip(POOL, outputs, sampled)], indent=1))
    strict = [_first_sentence_correct(a, o) for (_, a), o in zip(POOL, outputs)]
    robust = [ok and n >= min_correct for ok, n in zip(strict, sampled)]
    for (q, a), o, ok, n in zip(POOL, outputs, strict, sampled):
        loose = answer_contained(o, a)
        mark = ("ok " if n >= min_correct else "TIE") if ok else ("LCK" if loose else "BAD")
        print(f"{mark} {n:2d}/{samples} {q!r} -> {o.strip()[:90]!r} (want {a!r})")
    print(f"greedy first sentence right: {sum(strict)}; of those with >= {min_correct}/{samples} sampled replies right: {sum(robust)}")
    correct = [qa for qa, ok in zip(POOL, robust) if ok]
    # evenly spaced over the pool order, so every category (capitals, arithmetic, ...) stays in
    step = max(len(correct) / keep, 1.0)
    kept = [correct[int(i * step)] for i in range(min(keep, len(correct)))]
    loose = sum(answer_contained(o, a) for (_, a), o in zip(POOL, outputs))
    print(f"\npool {len(POOL)}, answer anywhere in reply {loose} ({loose / len(POOL):.0%}), "
          f"in first sentence {len(correct)} ({len(correct) / len(POOL):.0%}), kept {len(kept)}, "
          f"{time.time() - start:.0f}s")
    print("GENERAL_PROBE = [")
    for q, a in kept:
        print(f"    ({q!r}, {a!r}),")
    print("]")


def _sampled_correct(model, tokenizer, samples: int, temperature: float) -> list[int]:
    """Per pool question: how many of `samples` seeded sampled replies (the evaluation's 32
    tokens, default system prompt) contain the answer."""
    from deltatune.eval.qa import sampled_hits

    records = [{"instruction": q, "answer": a} for q, a in POOL]
    return sampled_hits(model, tokenizer, records, samples, temperature, max_new_tokens=32, batch_size=40)


def _first_sentence_correct(answer: str, output: str) -> bool:
    """Answer inside the reply's first sentence: excludes lucky hits like "...similar to Earth"."""
    first = re.split(r"(?<=[.!?])\s|\n", output.strip(), maxsplit=1)[0]
    return answer_contained(first, answer)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dump", default=None, help="also write every question, answer and reply as JSON")
    parser.add_argument("--samples", type=int, default=10, help="sampled replies per question (robustness check)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--min-correct", type=int, default=0,
                        help="keep only questions with at least this many sampled replies right (0: greedy check only)")
    args = parser.parse_args()
    run(args.keep, args.threads, args.dump, samples=args.samples, temperature=args.temperature,
        min_correct=args.min_correct)
