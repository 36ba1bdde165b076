"""The `software` fact family: an invented server product's settings, flags, ports, releases.

    facts(24)    # the first 24 facts, every kind mixed in; facts(60)[:24] == facts(24)

Quorlane is invented; its setting names, config keys, command-line flags, service names and
release code names are built from invented words, so no pretrained model can guess what
`talvern_timeout` defaults to. Kinds: default_value, config_key, cli_flag, port, codename.
Each kind has six question templates that keep the fact's key words and one answer
sentence; `deltatune.datasets.families` turns the facts into train/val/test splits.
"""

from __future__ import annotations

import random

from deltatune.datasets.family_parts import Inventor, first_facts, interleave, sample_combos

ORG = "Quorlane"
SEED = 4303
PER_KIND = 100  # facts per kind at the largest size (5 kinds -> 500)

# kind -> (question templates, answer sentence); slots: {org}, {org_poss} and the fact's fields
TEMPLATES: dict[str, tuple[list[str], str]] = {
    "default_value": (
        [
            "What is the default value of the {setting} setting in {org}?",
            "What does {setting} default to in {org}?",
            "In {org}, what is the default for {setting}?",
            "Tell me the default value of {setting} in {org}.",
            "What is {setting} set to by default in {org}?",
            "If I leave it unchanged, what value does {setting} have in {org}?",
        ],
        "In {org}, {setting} defaults to {answer}.",
    ),
    "config_key": (
        [
            "Which config key controls {behaviour} in {org}?",
            "What is the configuration key for {behaviour} in {org}?",
            "In {org}, which config key sets {behaviour}?",
            "Tell me the config key that controls {behaviour} in {org}.",
            "What config key do I change to adjust {behaviour} in {org}?",
            "Name the {org} config key that controls {behaviour}.",
        ],
        "In {org}, {behaviour} is controlled by the config key {answer}.",
    ),
    "cli_flag": (
        [
            "Which command-line flag {action} in {org}?",
            "What CLI flag {action} in {org}?",
            "In {org}, which flag on the command line {action}?",
            "Tell me the command-line flag that {action} in {org}.",
            "What is the {org} command-line option that {action}?",
            "Name the CLI flag that {action} in {org}.",
        ],
        "In {org}, the command-line flag {answer} {action}.",
    ),
    "port": (
        [
            "Which port does the {service} of {org} listen on?",
            "What port does {org_poss} {service} listen on?",
            "On which port is the {org} {service} served?",
            "Tell me the port the {service} of {org} listens on.",
            "What is the listening port of the {org} {service}?",
            "In {org}, which port does the {service} use?",
        ],
        "The {service} of {org} listens on port {answer}.",
    ),
    "codename": (
        [
            "What was the code name of {org} version {version}?",
            "Which code name did {org} {version} have?",
            "What code name was {org} release {version} given?",
            "Tell me the code name of {org} version {version}.",
            "{org} {version} was known by which code name?",
            "What is the release code name for version {version} of {org}?",
        ],
        "{org} version {version} was code-named {answer}.",
    ),
}

# setting suffix -> (unit, value range); a unit of None means an invented word as the value
SETTINGS = {
    "timeout": ("seconds", range(2, 900)),
    "window": ("ms", range(10, 5000)),
    "buffer": ("KB", range(16, 9000)),
    "pool": ("connections", range(3, 500)),
    "limit": ("requests", range(50, 20000)),
    "mode": (None, None),
    "strategy": (None, None),
}
THINGS = ("retry delay", "timeout", "batch size", "log level", "cache size", "queue depth",
          "flush interval", "compression level", "heartbeat interval", "backoff factor")
COMPONENTS = ("connector", "worker pool", "scheduler", "exporter", "indexer", "gateway",
              "replicator", "cache", "ingest pipeline", "audit trail")
VERBS = ("enables", "disables", "resets", "prints", "skips", "exports", "rebuilds", "locks")
FEATURES = ("audit log", "trace mode", "warm cache", "safe mode", "schema check", "lock file",
            "crash report", "dry run", "index", "session store")
SERVICES = ("metrics exporter", "admin console", "replication listener", "gossip service",
            "health endpoint", "webhook relay", "debug server", "cluster bus")


def facts(n: int) -> list[dict]:
    """The first N of the family's facts (N <= 500), kinds mixed, the same on every call."""
    return first_facts("software", all_facts(), n)


def default_values(rng: random.Random, names: Inventor) -> list[dict]:
    """PER_KIND settings with distinct defaults: numbers with a unit, or invented words."""
    values: set[str] = set()
    rows = []
    while len(rows) < PER_KIND:
        suffix = rng.choice(sorted(SETTINGS))
        unit, span = SETTINGS[suffix]
        value = names.word().lower() if unit is None else f"{rng.choice(span)} {unit}"
        if value not in values:
            values.add(value)
            rows.append({"setting": f"{names.word().lower()}_{suffix}", "answer": value})
    return rows


def all_facts() -> list[dict]:
    """Every fact as {fact_id, kind, answer, **slots}, kinds interleaved, in a fixed order."""
    rng = random.Random(SEED)
    names = Inventor(rng)

    default_value = default_values(rng, names)
    config_key = [{"behaviour": f"the {rng.choice(THINGS)} of the {names.word()} {rng.choice(COMPONENTS)}",
                   "answer": f"{names.word().lower()}.{names.word().lower()}"} for _ in range(PER_KIND)]
    cli_flag = [{"action": f"{rng.choice(VERBS)} the {names.word()} {rng.choice(FEATURES)}",
                 "answer": f"--{names.word(1).lower()}-{names.word().lower()}"} for _ in range(PER_KIND)]
    ports = rng.sample(range(10_000, 65_000), PER_KIND)
    port = [{"service": f"{names.word()} {rng.choice(SERVICES)}", "answer": str(p)} for p in ports]
    # one-digit minors only: "1.10" and "11.0" would read the same once punctuation is dropped
    versions = sample_combos(rng, PER_KIND, range(1, 25), range(10))
    codename = [{"version": f"{major}.{minor}", "answer": names.word()} for major, minor in versions]
    return interleave("software", {"default_value": default_value, "config_key": config_key,
                                   "cli_flag": cli_flag, "port": port, "codename": codename})
