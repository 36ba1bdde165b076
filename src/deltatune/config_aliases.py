"""Config key names users bring from other fine-tuning tools, and what deltatune calls them.

    from deltatune.config_aliases import lookup
    lookup("learning_rate")  # Alias(key='train.lr', origin='Hugging Face Trainer / ...', note='')

One table, read by `deltatune.config` when a config has a key it does not know: instead of
the nearest spelling ("did you mean 'early_stopping_patience'?") the error names the deltatune
key for the user's name (`learning_rate` -> `train.lr`), or says there is none and what to do.
A row's `key` is the full dotted deltatune key (`recipe` is top level); `None` means no
equivalent, and then `note` says what to do instead. Add a row when a tool's name comes up.
"""

from __future__ import annotations

from dataclasses import dataclass

HF = "Hugging Face Trainer"
LF = "LLaMA-Factory"
AX = "axolotl"
PEFT = "PEFT"
TRL = "TRL"
SCRIPTS = "Hugging Face example scripts"


@dataclass(frozen=True)
class Alias:
    key: str | None  # the deltatune key, dotted; None: deltatune has no equivalent
    origin: str  # whose name it is, for the message
    note: str = ""  # the value to write, or how the meaning differs


def _by(*origins: str) -> str:
    return " / ".join(origins)


ALIASES: dict[str, Alias] = {
    # --- train: optimisation (Trainer's TrainingArguments, which LLaMA-Factory uses as is)
    "learning_rate": Alias("train.lr", _by(HF, LF, AX)),
    "num_train_epochs": Alias("train.epochs", _by(HF, LF)),
    "num_epochs": Alias("train.epochs", AX),
    "per_device_train_batch_size": Alias("train.batch_size", _by(HF, LF)),
    "micro_batch_size": Alias("train.batch_size", AX),
    "train_batch_size": Alias("train.batch_size", SCRIPTS),
    "gradient_accumulation_steps": Alias("train.grad_accum", _by(HF, LF, AX)),
    "max_steps": Alias("train.max_steps", _by(HF, LF, AX)),
    "warmup_steps": Alias("train.warmup_steps", _by(HF, LF, AX)),
    "warmup_ratio": Alias(None, _by(HF, LF, AX), "set train.warmup_steps to a number of optimiser steps"),
    "lr_scheduler_type": Alias("train.schedule", _by(HF, LF), "constant, linear or cosine"),
    "lr_scheduler": Alias("train.schedule", AX, "constant, linear or cosine"),
    "weight_decay": Alias("train.weight_decay", _by(HF, LF, AX)),
    "max_grad_norm": Alias("train.max_grad_norm", _by(HF, LF, AX)),
    "seed": Alias("train.seed", _by(HF, LF, AX)),
    "adam_beta1": Alias("train.betas", _by(HF, LF), "one pair: train.betas: [beta1, beta2]"),
    "adam_beta2": Alias("train.betas", _by(HF, LF), "one pair: train.betas: [beta1, beta2]"),
    "optim": Alias(None, _by(HF, LF), "the optimiser is always AdamW (train.betas, train.weight_decay)"),
    "optimizer": Alias(None, AX, "the optimiser is always AdamW (train.betas, train.weight_decay)"),
    # --- train: evaluation, checkpoints, logging
    "eval_steps": Alias("train.eval_every", _by(HF, LF, AX)),
    "eval_strategy": Alias(None, _by(HF, LF), "set train.eval_every (steps); validation also runs at the end"),
    "evaluation_strategy": Alias(None, HF, "set train.eval_every (steps); validation also runs at the end"),
    "save_steps": Alias("train.save_every", _by(HF, LF, AX)),
    "save_strategy": Alias(None, _by(HF, LF), "set train.save_every (steps); a checkpoint is also saved at the end"),
    "save_total_limit": Alias("train.keep_checkpoints", _by(HF, LF, AX)),
    "load_best_model_at_end": Alias("train.restore_best", _by(HF, LF), "judged by the validation loss"),
    "logging_steps": Alias("train.log_every", _by(HF, LF, AX)),
    "report_to": Alias(None, _by(HF, LF), "metrics go to RUN_DIR/metrics.jsonl"),
    "resume_from_checkpoint": Alias(None, _by(HF, LF, AX), "run `deltatune train CONFIG --resume`"),
    "per_device_eval_batch_size": Alias("eval.batch_size", _by(HF, LF)),
    "eval_batch_size": Alias("eval.batch_size", AX),
    # --- method: LoRA and the other methods (PEFT's LoraConfig names, and the tools' own)
    "finetuning_type": Alias("method.name", LF, "same values: method: {name: lora | freeze | full}"),
    "adapter": Alias("method.name", AX, "method: {name: lora}; there is no QLoRA"),
    "r": Alias("method.r", PEFT),
    "lora_r": Alias("method.r", AX),
    "lora_rank": Alias("method.r", LF),
    "lora_alpha": Alias("method.alpha", _by(PEFT, LF, AX)),
    "lora_dropout": Alias("method.dropout", _by(PEFT, LF, AX)),
    "lora_target": Alias("method.targets", LF, "LLaMA-Factory's `all` is `all-linear` here; a list is a YAML list"),
    "lora_target_modules": Alias("method.targets", AX),
    "lora_target_linear": Alias("method.targets", AX, "true is method.targets: all-linear"),
    "target_modules": Alias("method.targets", PEFT),
    "use_rslora": Alias("method.rslora", _by(PEFT, LF)),
    "peft_use_rslora": Alias("method.rslora", AX),
    "num_virtual_tokens": Alias("method.num_virtual_tokens", PEFT),
    "freeze_trainable_layers": Alias("method.train_last_n_blocks", LF, "with name: freeze; the top N blocks only"),
    "freeze_trainable_modules": Alias("method.train_modules", LF, "with name: freeze"),
    "quantization_bit": Alias(None, LF, "no quantised training; model.dtype: bfloat16 halves the base's memory"),
    "load_in_4bit": Alias(None, AX, "no quantised training; model.dtype: bfloat16 halves the base's memory"),
    "load_in_8bit": Alias(None, AX, "no quantised training; model.dtype: bfloat16 halves the base's memory"),
    # --- recipe (a top-level key)
    "stage": Alias("recipe", LF, "same values for sft and pt"),
    # --- data
    "max_seq_length": Alias("data.max_length", _by(TRL, SCRIPTS)),
    "max_seq_len": Alias("data.max_length", SCRIPTS),
    "cutoff_len": Alias("data.max_length", LF),
    "sequence_len": Alias("data.max_length", AX),
    "max_length": Alias("data.max_length", TRL),
    "dataset": Alias("data.train", LF, "a file (.jsonl/.json/.csv) or builtin:NAME/SPLIT"),
    "datasets": Alias("data.train", AX, "a file (.jsonl/.json/.csv) or builtin:NAME/SPLIT"),
    "train_file": Alias("data.train", SCRIPTS),
    "eval_dataset": Alias("data.val", LF, "a file (.jsonl/.json/.csv) or builtin:NAME/SPLIT"),
    "eval_file": Alias("data.val", SCRIPTS),
    "validation_file": Alias("data.val", SCRIPTS),
    "test_file": Alias("data.test", SCRIPTS),
    "val_size": Alias(None, LF, "give the validation examples as their own file in data.val"),
    "val_set_size": Alias(None, AX, "give the validation examples as their own file in data.val"),
    "packing": Alias("data.pack", _by(TRL, LF), "for the text format"),
    "sample_packing": Alias("data.pack", AX, "for the text format"),
    # axolotl's train_on_inputs and deltatune's train_on_prompt (LLaMA-Factory's name and
    # meaning) agree: true also puts the loss on the prompt tokens; the default trains on the reply.
    "train_on_inputs": Alias("data.train_on_prompt", AX, "LLaMA-Factory's meaning: true also trains on the prompt"),
    "default_system": Alias("data.system_prompt", LF),
    "default_system_message": Alias("data.system_prompt", AX),
    "template": Alias(None, LF, "the model's own chat template is used"),
    "chat_template": Alias(None, AX, "the model's own chat template is used"),
    # --- model
    "model_name_or_path": Alias("model.name", _by(HF, LF)),
    "base_model": Alias("model.name", AX),
    "torch_dtype": Alias("model.dtype", HF, "float32, bfloat16 or float16"),
    "bf16": Alias("model.dtype", _by(HF, LF, AX), "write model.dtype: bfloat16"),
    "fp16": Alias("model.dtype", _by(HF, LF, AX), "write model.dtype: float16 (inference only; train in bfloat16)"),
    # --- output
    "output_dir": Alias("output.dir", _by(HF, LF, AX)),
}


def lookup(name: str) -> Alias | None:
    """The row for a foreign key name; `Learning-Rate` finds `learning_rate` too."""
    return ALIASES.get(name.strip().lower().replace("-", "_"))
