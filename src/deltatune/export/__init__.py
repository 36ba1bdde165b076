"""deltatune.export: merged HF folders and PEFT-layout adapters from training runs, verified.

    from deltatune.export.merge import merge_run, export_peft
    merge_run("runs/latest", "exported/merged")          # = deltatune merge runs/latest --out ...

Nothing is imported here so that `deltatune --help` stays fast (torch loads on use).
"""
