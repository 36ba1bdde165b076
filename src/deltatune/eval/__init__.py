"""deltatune.eval: measure models — QA accuracy, loss/perplexity, before/after reports.

    deltatune eval RUN_DIR [--data FILE]        (cli.py -> runner.run_eval)
    from deltatune.eval.runner import evaluate  (what the training recipes call)

Modules: text_metrics (normalise, exact match, answer contained), metrics (the table of
`eval.metrics` names: token F1, ROUGE-L, BLEU, chrF, ...; each split's defaults), qa (batched
greedy QA accuracy), multiple_choice (option log-likelihood accuracy), perplexity
(token-weighted loss), report (table, eval.json, loss plot), runner (splits -> metrics; the
`eval` command), cli (`eval` and `generate` sub-commands).
"""
