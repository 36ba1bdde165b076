"""Measure a judge's honest agreement with known preference pairs (default: SmolLM2 on
builtin:orgfacts/prefs_test), locally and through a started `deltatune serve` endpoint.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/measure_judge.py [--pairs builtin:orgfacts/prefs_test]
        [--judge smollm2-135m] [--limit 100] [--batch-size 8] [--endpoint] [--out result.json]

Local: every pair is asked in both orders (chosen shown as A, then as B) through
`deltatune.rlaif.LocalJudge`; agreement = share of pairs with P(chosen better) > 0.5 after the
order-swap average. Also printed: the agreement of each single order and the mean P("A") over
all prompts, which show the judge's position bias that the swap cancels.
--endpoint: the same model is served by `deltatune serve` on a free localhost port (in this
process, on a thread) and judged through `deltatune.rlaif.EndpointJudge` (greedy verdict
text, votes / 2; ties are pairs where the two orders disagree or the reply was neither A nor B).
Each part prints its wall time. Without --limit the whole split is judged (135 pairs). Measured
on 100 pairs, one shared CPU thread: local 112 s, endpoint 183 s.
"""

from __future__ import annotations

import argparse
import json
import time


def local_part(judge_name: str, triples: list[tuple[str, str, str]], batch_size: int) -> dict:
    from deltatune.rlaif.judge_local import LocalJudge
    from deltatune.rlaif.judges import DEFAULT_RUBRIC, compare_messages, swap_average

    judge = LocalJudge.from_target(judge_name, batch_size=batch_size)
    start = time.perf_counter()
    chosen_first = [compare_messages(DEFAULT_RUBRIC, q, c, r) for q, c, r in triples]
    chosen_second = [compare_messages(DEFAULT_RUBRIC, q, r, c) for q, c, r in triples]
    p_a = judge.first_verdict_probs(chosen_first + chosen_second, judge.prefer_ids)  # P("A") per prompt
    n = len(triples)
    p_chosen = swap_average(p_a[:n], p_a[n:])
    return {
        "judge": judge_name, "pairs": n,
        "agreement": sum(p > 0.5 for p in p_chosen) / n,
        "agreement_chosen_as_A_only": sum(p > 0.5 for p in p_a[:n]) / n,
        "agreement_chosen_as_B_only": sum(p < 0.5 for p in p_a[n:]) / n,
        "mean_p_first_slot": sum(p_a) / (2 * n),
        "mean_p_chosen": sum(p_chosen) / n,
        "wall_s": round(time.perf_counter() - start, 1),
    }


def endpoint_part(judge_name: str, triples: list[tuple[str, str, str]]) -> dict:
    from deltatune.rlaif.judge_endpoint import EndpointJudge
    from deltatune.rlaif.label import judge_agreement
    from deltatune.serve.server import ServeSettings, build_state, start_in_thread

    handle = start_in_thread(build_state(judge_name, {}, ServeSettings(max_batch=8)))
    try:
        start = time.perf_counter()
        judge = EndpointJudge(handle.url, concurrency=8)
        result = judge_agreement(judge, triples)
        result.pop("p_chosen")
        result["wall_s"] = round(time.perf_counter() - start, 1)
        return result
    finally:
        handle.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", default="builtin:orgfacts/prefs_test")
    parser.add_argument("--judge", default="smollm2-135m")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--endpoint", action="store_true", help="also judge through a started deltatune serve")
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args()

    import torch

    from deltatune.data import load_records
    from deltatune.rlaif.label import preference_pairs

    torch.set_num_threads(1)
    triples = preference_pairs(load_records(args.pairs)[: args.limit])
    results = {"pairs_spec": args.pairs, "local": local_part(args.judge, triples, args.batch_size)}
    print(json.dumps(results["local"]), flush=True)
    if args.endpoint:
        results["endpoint"] = endpoint_part(args.judge, triples)
        print(json.dumps(results["endpoint"]), flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
