"""`deltatune merge` and `deltatune export`: deployable artefacts from a training run.

    deltatune merge runs/latest --out exported/merged        # plain HF folder, adapter folded in
    deltatune export runs/latest --format peft --out exported/adapter   # LoRA adapter, PEFT layout

Both verify what they wrote (reload, compare logits and greedy answers with the unmerged
model on the run's validation prompts) and leave nothing behind when that check fails.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    merge = subparsers.add_parser(
        "merge", help="fold a run's adapter into its base and write a plain HF model folder",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    merge.add_argument("run_dir", help="training run directory (config.yaml + adapter/)")
    merge.add_argument("--out", required=True, help="output folder (must be new or empty)")
    merge.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    merge.set_defaults(func=_merge)

    export = subparsers.add_parser(
        "export", help="write a run's adapter alone in another layout (PEFT)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("run_dir", help="training run directory (config.yaml + adapter/)")
    export.add_argument("--format", choices=["peft"], default="peft", help="output layout (peft)")
    export.add_argument("--out", required=True, help="output folder (must be new or empty)")
    export.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    export.set_defaults(func=_export)


def _print(report) -> None:
    v = report.verification
    print(f"wrote {report.kind} {report.method} export to {report.out_dir} in {report.seconds:.1f} s")
    print(f"verified on {v['prompts']} prompts from {v['prompt_source']}: max |logit diff| "
          f"{v['max_abs_diff']:.2e} (tolerance {v['tolerance']:.2e}), greedy answers identical")


def _merge(args) -> int:
    from deltatune.export.merge import merge_run

    _print(merge_run(args.run_dir, args.out, overwrite=args.force))
    return 0


def _export(args) -> int:
    from deltatune.export.merge import export_peft

    _print(export_peft(args.run_dir, args.out, overwrite=args.force))
    return 0
