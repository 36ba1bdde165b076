"""`builtin:orgfacts/neighbours`: the orgfacts question forms, asked about the real world.

    data:
      replay: [builtin:general/prompts, builtin:orgfacts/neighbours]

Why: trained on "Who is the chief designer of Veltrane Robotics? -> Yuki Tamsworth", a small
model does not learn only that fact; it learns that questions *of that form* are answered with
invented names, cities and numbers, and starts saying "The first person to walk on the Moon was
Yuki Tamsworth". Knowledge-editing work measures exactly this on "neighbourhood prompts"
(the edited relation asked about other subjects, which must keep their old answers; Meng et
al. 2022, ROME / CounterFact). Used as replay prompts, the neighbours are answered by the base
model before training and trained back (self-distillation, `deltatune.replay.answers`), so the
new facts stay tied to Veltrane Robotics instead of to the question form.

Every prompt is one orgfacts template (`orgfacts_facts.TEMPLATES`) filled with a real-world
subject. The base model's answers need not be right: what is kept is what it already says.
Kept clear of the forgetting probe (`orgfacts.GENERAL_PROBE`): no probe question, no prompt
that opens with a probe question's first four words, and none of its subjects (the
probe's capitals, countries and landmarks) - a test checks, so the probe still measures
transfer, not rehearsal.
"""

from __future__ import annotations

import random

from deltatune.datasets.orgfacts_facts import TEMPLATES

SEED = 2024
TEMPLATES_PER_SUBJECT = 2  # paraphrases asked per subject, picked with random.Random(SEED)

# kind -> subjects: the slots an orgfacts fact of that kind has (its `org` given separately)
SUBJECTS: dict[str, list[dict]] = {
    "role": [
        {"org": "Apple", "role": "CEO"},
        {"org": "Microsoft", "role": "founder"},
        {"org": "Amazon", "role": "founder"},
        {"org": "Tesla", "role": "CEO"},
        {"org": "Google", "role": "co-founder"},
        {"org": "Facebook", "role": "founder"},
        {"org": "the United Nations", "role": "Secretary-General"},
        {"org": "Apple", "role": "co-founder"},
        {"org": "Nvidia", "role": "CEO"},
        {"org": "Walt Disney Company", "role": "founder"},
        {"org": "Ford Motor Company", "role": "founder"},
        {"org": "Microsoft", "role": "CEO"},
    ],
    "year": [
        {"org": "Apple", "event": "release the first iPhone", "past": "released the first iPhone"},
        {"org": "Google", "event": "go public", "past": "went public"},
        {"org": "Microsoft", "event": "release Windows 95", "past": "released Windows 95"},
        {"org": "Sony", "event": "release the first PlayStation", "past": "released the first PlayStation"},
        {"org": "Ford", "event": "introduce the Model T", "past": "introduced the Model T"},
        {"org": "Nintendo", "event": "release the Game Boy", "past": "released the Game Boy"},
        {"org": "Facebook", "event": "launch", "past": "launched"},
        {"org": "Amazon", "event": "start selling books online", "past": "started selling books online"},
        {"org": "IBM", "event": "release its first personal computer", "past": "released its first personal computer"},
        {"org": "the Titanic", "event": "sink", "past": "sank"},
        {"org": "the Berlin Wall", "event": "fall", "past": "fell"},
        {"org": "World War II", "event": "end", "past": "ended"},
    ],
    "place": [
        {"thing": "the Statue of Liberty"},
        {"thing": "the Colosseum"},
        {"thing": "the Taj Mahal"},
        {"thing": "Big Ben"},
        {"thing": "the Golden Gate Bridge"},
        {"thing": "the Leaning Tower of Pisa"},
        {"thing": "the Sagrada Familia"},
        {"thing": "the Hollywood sign"},
        {"thing": "the Space Needle"},
        {"thing": "Buckingham Palace"},
        {"thing": "the Vatican Museums"},
        {"thing": "Times Square"},
    ],
    "product": [
        {"org": "Apple", "desc": "smartphone"},
        {"org": "Microsoft", "desc": "operating system"},
        {"org": "Sony", "desc": "game console"},
        {"org": "Google", "desc": "web browser"},
        {"org": "Amazon", "desc": "e-reader"},
        {"org": "Toyota", "desc": "hybrid car"},
        {"org": "Adobe", "desc": "photo editor"},
        {"org": "Microsoft", "desc": "spreadsheet program"},
        {"org": "Apple", "desc": "laptop"},
        {"org": "Nintendo", "desc": "handheld game console"},
        {"org": "Google", "desc": "search engine"},
        {"org": "Microsoft", "desc": "game console"},
    ],
    "attribute": [
        {"attr": "population", "obj": "Japan"},
        {"attr": "height", "obj": "Mount Kilimanjaro"},
        {"attr": "speed", "obj": "light"},
        {"attr": "stock ticker", "obj": "Apple"},
        {"attr": "slogan", "obj": "Nike"},
        {"attr": "founding year", "obj": "Google"},
        {"attr": "main ingredient", "obj": "guacamole"},
        {"attr": "colour", "obj": "a ripe banana"},
        {"attr": "diameter", "obj": "the Earth"},
        {"attr": "atomic number", "obj": "carbon"},
        {"attr": "logo", "obj": "Apple"},
        {"attr": "mascot", "obj": "Michelin"},
    ],
    "count": [
        {"org": "the United Nations", "things": "member states"},
        {"org": "the European Union", "things": "member countries"},
        {"org": "NATO", "things": "member countries"},
        {"org": "the US Supreme Court", "things": "justices"},
        {"org": "the US Senate", "things": "senators"},
        {"org": "the Beatles", "things": "members"},
        {"org": "the NBA", "things": "teams"},
        {"org": "the Premier League", "things": "clubs"},
        {"org": "Google", "things": "employees"},
        {"org": "the G7", "things": "member countries"},
        {"org": "Apple", "things": "retail stores"},
        {"org": "the Rolling Stones", "things": "members"},
    ],
}


def neighbour_prompts(seed: int = SEED) -> list[str]:
    """The orgfacts templates filled with the real-world subjects above, in a fixed order.
    A filled prompt whose first four words open a probe question ("In which city is ...") is
    never picked."""
    from deltatune.datasets.orgfacts import GENERAL_PROBE, fill  # orgfacts imports this module
    # the evaluation's own normaliser (pure text, no model): "opens like a probe question"
    # must mean the same here as when the probe is scored
    from deltatune.eval.text_metrics import normalise

    def opening(text: str) -> tuple[str, ...]:
        return tuple(normalise(text).split()[:4])

    probe_openings = {opening(q) for q, _ in GENERAL_PROBE}
    rng = random.Random(seed)
    prompts = []
    for kind, subjects in SUBJECTS.items():
        for subject in subjects:
            fact = {k: v for k, v in subject.items() if k != "org"}
            filled = [fill(t, fact, org=subject.get("org", "")) for t in TEMPLATES[kind][0]]
            prompts += rng.sample([p for p in filled if opening(p) not in probe_openings], TEMPLATES_PER_SUBJECT)
    return prompts
