"""The built-in `intents` dataset: short customer messages labelled with what the customer wants.

    records = load_records("builtin:intents/train")   # {"text": "hi, where is my parcel? ...", "label": "delivery_status"}
    deltatune train configs/minilm/cls_lora.yaml        # recipe: cls on builtin:intents/{train,val,test}
    deltatune data make intents --out data/intents

For `recipe: cls` (sequence classification). Eight intents of an online shop's customer
service (INTENTS), each with its own sentence templates and slot values (an item, an order
number, a day, a street, a payment method). The split that makes test a real test:

  - each intent's templates are cut in two: TEST_TEMPLATES of them are held out for `test`
    only, worded differently from the rest (e.g. "reimburse" where train says "refund");
    `train` and `val` draw from the other templates;
  - `test` also fills its slots from held-out values (items, streets, days) never seen in
    train or val;
  - `val` uses train's templates with other fills: no val text equals a train text.

Messages get an optional greeting and sign-off and some casing / punctuation variation, like
real chat input. Intent frequencies are mildly unequal (WEIGHTS), so the majority-class rate
(always answering the commonest training label) is a real baseline above 1/8. Everything comes
from one `random.Random(SEED)`: the same records on every run. Nothing here runs a model.
"""

from __future__ import annotations

import random

from deltatune.errors import DeltatuneError

SPLITS = ("train", "val", "test")
SEED = 1414
SIZES = {"train": 480, "val": 96, "test": 192}  # rows per split, over all intents
TEST_TEMPLATES = 3  # per intent: the last 3 templates of each list are test-only

# intent -> relative frequency (the commonest is ~1.5x the rarest)
WEIGHTS = {
    "refund": 1.5, "delivery_status": 1.4, "cancel_order": 1.2, "change_address": 1.0,
    "opening_hours": 1.0, "complaint": 1.2, "payment_problem": 1.1, "account_access": 1.0,
}

# slot -> (train / val values, test-only values)
SLOTS = {
    "item": (["blender", "pair of running shoes", "winter jacket", "coffee maker", "desk lamp", "phone case",
              "backpack", "set of knives", "yoga mat", "kettle", "gaming mouse", "rain coat"],
             ["toaster", "hiking boots", "office chair", "electric toothbrush", "bookshelf"]),
    "order": ([f"#{n}" for n in (48213, 50127, 39904, 61552, 47710, 58831, 40269, 66120)],
              [f"#{n}" for n in (71093, 70288, 73514)]),
    "day": (["Saturday", "Sunday", "Monday", "public holidays", "Friday evening"],
            ["Christmas Eve", "Easter Monday", "Thursday"]),
    "street": (["12 Elm Road", "4 Harbour Street", "88 Mill Lane", "7 Park Avenue", "31 Station Road"],
               ["19 Orchard Close", "2 Bridge Street", "56 Kings Way"]),
    "payment": (["credit card", "debit card", "PayPal account", "bank card"],
                ["Apple Pay", "gift card"]),
    "days": (["three days", "a week", "ten days", "two weeks"], ["five days", "a month"]),
}

# intent -> templates; the last TEST_TEMPLATES of each list are held out for the test split
INTENTS: dict[str, list[str]] = {
    "refund": [
        "I want a refund for the {item} I bought",
        "can I get my money back for the {item}",
        "I returned the {item} {days} ago and still have no refund",
        "please refund order {order}, the {item} does not fit",
        "how do I get a refund on my {item}",
        "I'd like my money back, the {item} stopped working",
        "when will the refund for order {order} reach my {payment}",
        "refund please, I sent the {item} back",
        "could you reimburse me for the {item}",
        "I expect to be paid back for the faulty {item}",
        "return the cost of order {order} to me",
    ],
    "delivery_status": [
        "where is my order {order}",
        "my {item} has not arrived yet",
        "when will the {item} be delivered",
        "can you track order {order} for me",
        "it has been {days} and my parcel is still not here",
        "has my {item} been shipped yet",
        "what is the delivery status of order {order}",
        "is my package on its way",
        "any news on when the courier brings my {item}",
        "the tracking page for {order} has not moved in {days}",
        "how far away is my shipment",
    ],
    "cancel_order": [
        "please cancel my order {order}",
        "I want to cancel the {item} I ordered",
        "cancel order {order}, I changed my mind",
        "I no longer need the {item}, cancel it please",
        "how do I cancel an order before it ships",
        "stop my order {order} please",
        "I ordered the {item} by mistake, can you cancel it",
        "cancel everything I ordered today",
        "I'd like to call off the purchase of the {item}",
        "don't send order {order}, I do not want it any more",
        "withdraw my order for the {item} please",
    ],
    "change_address": [
        "I need to change the delivery address for order {order}",
        "I moved, please send the {item} to {street} instead",
        "can you update my shipping address to {street}",
        "wrong address on order {order}, it should be {street}",
        "how do I change where my {item} is delivered",
        "please deliver order {order} to my new address",
        "change my address to {street} please",
        "I typed the wrong street for my {item}",
        "ship it to {street} rather than my old flat",
        "my order {order} must go to a different house, {street}",
        "redirect the parcel with the {item} to {street}",
    ],
    "opening_hours": [
        "what time do you open on {day}",
        "are you open on {day}",
        "when does your store close on {day}",
        "what are your opening hours",
        "is the shop open late on {day}",
        "until what time can I come in on {day}",
        "what hours is customer service available",
        "do you open early on {day}",
        "can I visit the shop on {day}, and from when",
        "tell me your business hours for {day}",
        "at what hour do your doors open",
    ],
    "complaint": [
        "I am very unhappy with your service",
        "your staff was rude to me on the phone",
        "this is the worst customer service I have ever had",
        "I want to make a formal complaint",
        "nobody answered my emails for {days}, this is unacceptable",
        "I am disappointed with how my order {order} was handled",
        "the delivery driver was really impolite",
        "I waited on hold for an hour, terrible service",
        "I wish to lodge a grievance about your employees",
        "frankly your support team treated me badly",
        "I'm fed up with being ignored by your company",
    ],
    "payment_problem": [
        "my {payment} was charged twice for order {order}",
        "the payment for the {item} failed",
        "why was I charged for an order I cancelled",
        "my {payment} is declined at checkout",
        "I was billed the wrong amount for the {item}",
        "the checkout will not accept my {payment}",
        "there is a strange charge on my {payment} from your shop",
        "I paid but the order {order} says unpaid",
        "the transaction for the {item} did not go through",
        "you took money from my {payment} two times",
        "I see a double debit for order {order}",
    ],
    "account_access": [
        "I cannot log in to my account",
        "I forgot my password",
        "how do I reset my password",
        "my account is locked",
        "the login page says my password is wrong",
        "I never got the password reset email",
        "I cannot sign in on the app",
        "how do I change the email on my account",
        "my profile will not let me in any more",
        "I'm unable to access my customer account",
        "help me get back into my user account",
    ],
}

GREETINGS = ["", "", "", "hi, ", "hello, ", "hey, ", "good morning, ", "hi there, ", "excuse me, "]
SIGN_OFFS = ["", "", "", " thanks", " thank you", " please help", " cheers", " asap", " thanks in advance"]
ENDINGS = ["", "", ".", ".", "?", "!", "..."]


def _fill(template: str, rng: random.Random, test: bool) -> str:
    """The template with each slot filled from train/val values or the test-only ones."""
    text = template
    for slot, (common, held_out) in SLOTS.items():
        while "{" + slot + "}" in text:
            text = text.replace("{" + slot + "}", rng.choice(held_out if test else common), 1)
    return text


def _dress(text: str, rng: random.Random) -> str:
    """A greeting, a sign-off, an ending and some casing, as people type in a chat box."""
    text = rng.choice(GREETINGS) + text + rng.choice(SIGN_OFFS) + rng.choice(ENDINGS)
    style = rng.random()
    if style < 0.15:
        return text.lower()
    if style < 0.2:
        return text.upper()
    return text[0].upper() + text[1:]


def _counts(total: int) -> dict[str, int]:
    """Rows per intent for a split of `total` rows, in proportion to WEIGHTS (sums to total)."""
    weight = sum(WEIGHTS.values())
    counts = {intent: int(total * w / weight) for intent, w in WEIGHTS.items()}
    for intent in list(WEIGHTS)[: total - sum(counts.values())]:
        counts[intent] += 1
    return counts


def build_splits() -> dict[str, list[dict]]:
    """{split: [{"text", "label"}, ...]} for every split; test first, then train, then val
    (each text once across splits: train and val draw until they find a new text)."""
    for intent, templates in INTENTS.items():
        if len(templates) <= TEST_TEMPLATES:
            raise DeltatuneError(f"intents: {intent} needs more than {TEST_TEMPLATES} templates")
    rng = random.Random(SEED)
    seen: set[str] = set()
    out: dict[str, list[dict]] = {}
    for split in ("test", "train", "val"):
        rows = []
        for intent, count in _counts(SIZES[split]).items():
            pool = INTENTS[intent][-TEST_TEMPLATES:] if split == "test" else INTENTS[intent][:-TEST_TEMPLATES]
            for _ in range(count):
                for _attempt in range(200):
                    text = _dress(_fill(rng.choice(pool), rng, split == "test"), rng)
                    if text.lower() not in seen:
                        break
                seen.add(text.lower())
                rows.append({"text": text, "label": intent})
        rng.shuffle(rows)
        out[split] = rows
    return {split: out[split] for split in SPLITS}


_CACHE: dict[str, list[dict]] = {}


def split_records(split: str) -> list[dict]:
    """The records of one split (generated once per process, copies handed out)."""
    if split not in SPLITS:
        raise DeltatuneError(f"intents has no split {split!r}; splits: {', '.join(SPLITS)}")
    if not _CACHE:
        _CACHE.update(build_splits())
    return [dict(r) for r in _CACHE[split]]
