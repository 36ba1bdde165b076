"""The Hugging Face trainer a user would otherwise pick: TRL's SFTTrainer / DPOTrainer with peft.

    run_trl(spec, steps, channel)      # in the trl worker; the parent drives it step by step

Settings, chosen as TRL's best for a CPU (TRL 1.x, checked against its SFTConfig / DPOConfig):
fp32 (`bf16=False`, TRL defaults it on), no gradient checkpointing (TRL defaults it on), the
loss on answer tokens only (the bench's pre-tokenised `labels` column masks the prompt, which
TRL keeps as given: completion-only), TRL's default fused AdamW (`adamw_torch_fused`) and its
fused, chunked LM-head log-probs. `padding_free`: TRL documents it for FlashAttention 2/3 only,
so `auto` turns it on only there; transformers also builds a block-diagonal mask from
`position_ids` under sdpa, so `--trl-padding-free on` measures that path (same loss). TRL 1.x's
DPOTrainer disables padding-free itself.

Same batches: the examples arrive as token ids in the bench's step order; a sequential sampler
(`train_sampling_strategy="sequential"`), `per_device_train_batch_size = B` and full batches
give TRL exactly the parent's batches, one per step. TRL's loss per step: SFT sums the labelled
tokens' NLL and divides by the step's labelled-token count (the same mean as the other sides);
DPO averages the per-pair sigmoid losses. On SmolLM2 TRL's step-1 loss sits ~2e-5 above the
other two (which agree exactly): torch's fp32 CPU `log_softmax` / `cross_entropy` kernel, which
deltatune and transformers use, sums an approximate exp and reads ~1.5e-5 low on such logits,
while TRL's log-probs go through `logsumexp` and match an fp64 reference to ~1e-7.

Timing: the trainer cannot be called one step at a time, so `StepClock` (a TrainerCallback)
blocks in `on_step_begin` until the parent sends `step`, times to `on_step_end` (forward,
backward, clipping, optimiser, zero_grad: what the other sides time), and reports the step with
its logged loss at the next `on_step_begin`, so TRL's logging and collation of the next batch
also happen before the parent moves on.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from deltatune.bench.hf_loop import build_hf_model
from deltatune.bench.memory import TrainingPhase
from deltatune.bench.workloads import (BETAS, DPO_BETA, EPS, MAX_GRAD_NORM, WEIGHT_DECAY, BenchSpec)


class StepClock(TrainerCallback):
    """Lets the parent start each step and times it (see the module docstring)."""

    def __init__(self, channel, info: dict):
        self.channel, self.info = channel, info
        self.phase: TrainingPhase | None = None
        self.pending: dict | None = None
        self.index, self.started = 0, 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.phase is None:  # the trainer is fully set up: this is the side's setup memory
            self.phase = TrainingPhase.begin()
            self.channel.emit("ready", info=self.info)
        self._flush()
        self.channel.expect("step")
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.pending = {"index": self.index, "seconds": time.perf_counter() - self.started, "loss": None}
        self.index += 1

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.pending is not None and logs and "loss" in logs:
            self.pending["loss"] = float(logs["loss"])

    def on_train_end(self, args, state, control, **kwargs):
        self._flush()

    def _flush(self) -> None:
        if self.pending is not None:
            self.channel.emit("step", **self.pending)
            self.pending = None


def padding_free_choice(spec: BenchSpec, model) -> tuple[bool, str]:
    """(padding_free, why) for TRL's SFTTrainer on this model's attention implementation."""
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if spec.spec.objective == "dpo":
        return False, "TRL 1.x's DPOTrainer disables padding_free itself"
    if spec.trl_padding_free != "auto":
        return spec.trl_padding_free == "on", f"--trl-padding-free {spec.trl_padding_free} (attention: {impl})"
    on = impl.startswith("flash_attention")
    return on, f"auto: TRL documents padding_free for FlashAttention 2/3; this model runs {impl}"


def run_trl(spec: BenchSpec, steps: list[list[dict]], channel, workdir: Path) -> None:
    """Build TRL's trainer over the bench's model and batches and train it under the parent's clock."""
    import trl
    from transformers import AutoTokenizer

    model = build_hf_model(spec)
    tokenizer = AutoTokenizer.from_pretrained(spec.model)
    tokenizer.pad_token_id = spec.pad_id
    padding_free, why = padding_free_choice(spec, model)
    common = dict(output_dir=str(Path(workdir) / "trl-output"), max_steps=spec.total_steps,
                  per_device_train_batch_size=spec.batch_size, gradient_accumulation_steps=1,
                  learning_rate=spec.learning_rate, lr_scheduler_type="constant", warmup_steps=0,
                  weight_decay=WEIGHT_DECAY, adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=EPS,
                  max_grad_norm=MAX_GRAD_NORM, bf16=False, fp16=False, gradient_checkpointing=False,
                  use_cpu=True, seed=spec.seed, data_seed=spec.seed, train_sampling_strategy="sequential",
                  dataloader_drop_last=False, dataloader_num_workers=0, dataloader_pin_memory=False,
                  logging_steps=1, save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True)
    info = {"trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "settings": {"trl": trl.__version__, "padding_free": padding_free, "padding_free_why": why}}
    clock = StepClock(channel, info)
    if spec.spec.objective == "dpo":
        args = trl.DPOConfig(**common, beta=DPO_BETA, loss_type=["sigmoid"], max_length=spec.max_length,
                             precompute_ref_log_probs=False, padding_free=False)
        trainer = _pretokenised_dpo_trainer()(model=model, args=args, train_dataset=_dpo_dataset(steps),
                                              processing_class=tokenizer, callbacks=[clock])
    else:
        # padding-free without packing needs max_length=None: the bench's rows are already cut to it
        args = trl.SFTConfig(**common, completion_only_loss=True, padding_free=padding_free, packing=False,
                             max_length=None if padding_free else spec.max_length)
        trainer = trl.SFTTrainer(model=model, args=args, train_dataset=_sft_dataset(steps),
                                 processing_class=tokenizer, callbacks=[clock])
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    info["settings"].update(optim=str(getattr(args.optim, "value", args.optim)), trainable_dtype=str(trainable[0].dtype).removeprefix("torch."),
                            loss="TRL fused LM head (chunked log-probs at every position)")
    trainer.train()
    channel.expect("finish")
    channel.emit("done", memory=clock.phase.end() if clock.phase else None)


def _sft_dataset(steps: list[list[dict]]):
    from datasets import Dataset

    return Dataset.from_list([{"input_ids": ex["input_ids"], "labels": ex["labels"]}
                              for examples in steps for ex in examples])


def _dpo_dataset(steps: list[list[dict]]):
    """TRL's pre-tokenised preference layout: the shared prompt, then each answer's ids."""
    from datasets import Dataset

    rows = []
    for examples in steps:
        for ex in examples:
            cut = ex["prompt_len"]
            rows.append({"prompt_ids": ex["chosen_input_ids"][:cut], "chosen_ids": ex["chosen_input_ids"][cut:],
                         "rejected_ids": ex["rejected_input_ids"][cut:]})
    return Dataset.from_list(rows)


def _pretokenised_dpo_trainer():
    """DPOTrainer that takes the bench's token ids as they are. TRL 1.x's DPOTrainer always
    re-tokenises text columns (SFTTrainer accepts `input_ids`); every side must see identical
    ids, so dataset preparation is skipped. Remove once DPOTrainer accepts pre-tokenised
    `prompt_ids` / `chosen_ids` / `rejected_ids` columns unchanged."""
    from trl import DPOTrainer

    class PretokenisedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    return PretokenisedDPOTrainer
