"""deltatune.eval: measure models — QA accuracy, loss/perplexity, before/after reports.

    deltatune eval RUN_DIR [--data FILE]        (cli.py -> runner.run_eval)
    from deltatune.eval.runner import evaluate  (what the training recipes call)

Modules: text_metrics (normalise, exact match, answer contained), qa (batched greedy QA
accuracy), perplexity (token-weighted loss), report (table, eval.json, loss plot), runner
(splits -> metrics; the `eval` command), cli (`eval` and `generate` sub-commands).
"""
