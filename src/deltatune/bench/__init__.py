"""`deltatune bench`: one fixed training workload through deltatune and the Hugging Face stack.

    deltatune bench                                   # lora-sft on the embedded SmolLM2-135M
    deltatune bench --workload full-sft --steps 16 --threads 2 --json

Three sides train the same model on the same batches, in the same order, from the same
initial weights, with the same optimiser (see `workloads.py` for what is held equal):

- `deltatune`: `apply_method` + the project's loss through the real `OptimiserStep`
  (`deltatune_side.py`), i.e. what `deltatune train` runs each step;
- `hf_loop`: a minimal transformers + peft loop, `model(**batch).loss` (`hf_loop.py`);
- `trl`: TRL's `SFTTrainer` / `DPOTrainer` with peft at its best CPU settings (`trl_side.py`).

Each side lives in its own fresh worker process (`worker.py`), so its peak resident memory is
its own (`memory.py`). The parent drives them step by step in rotation: side X runs step i
while the others wait on their pipe, then the next side runs step i, and the side that goes
first changes every step; machine noise therefore hits every side alike. TRL's trainer cannot
be called one step at a time, so its worker blocks inside a `TrainerCallback` at the start of
each step until the parent says go, and times the step from `on_step_begin` to `on_step_end`
(`protocol.py`). `flops.py` counts model FLOPs and measures this machine's fp32 matmul peak in
the same run; `report.py` writes JSON + Markdown; `runner.py` composes the run; `cli.py` is
the command.
"""
