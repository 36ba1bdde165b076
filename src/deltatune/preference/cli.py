"""`deltatune score RUN PROMPT ANSWER [ANSWER ...]`: the reward a trained reward model gives.

    deltatune score runs/rm "Who founded Acme?" "Ada Lovelace." "Alan Turing."
    # 2.314  Ada Lovelace.
    # -1.027 Alan Turing.

RUN must be a finished `recipe: rm` run dir (a clear error otherwise).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("score", help="score answers with a trained reward model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run dir of a `recipe: rm` run")
    p.add_argument("prompt", help="the user's prompt")
    p.add_argument("answers", nargs="+", help="one or more answers to score")
    p.add_argument("--device", default=None, help="cpu / cuda (default: the run's model.device)")
    p.set_defaults(func=_score)


def _score(args) -> int:
    from deltatune.preference.reward_model import RewardModel

    reward_model = RewardModel.load(args.run, device=args.device)
    for answer, value in zip(args.answers, reward_model.score([(args.prompt, a) for a in args.answers])):
        print(f"{value:+.4f}  {answer}")
    return 0
