"""Toy rule rewards for the RL recipe tests (imported as `rl.reward: python:rl_toy_rewards:NAME`)."""



def says_red(turns, completion: str, record: dict) -> float:
    """1 when the reply says "red" (and not "blue"), else 0."""
    text = completion.lower()
    return float("red" in text and "blue" not in text)
