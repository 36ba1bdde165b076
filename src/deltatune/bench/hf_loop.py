"""The strongest plain baseline: a minimal transformers + peft training loop.

    model = build_hf_model(spec)        # AutoModelForCausalLM (+ peft LoRA; qlora: bitsandbytes 4-bit)
    side = HfLoopSide(spec)
    loss = side.step(batch)             # forward, backward, clip, AdamW, zero_grad

What a user writes by hand after the peft quick-start: `model(**batch).loss` (transformers
computes logits at every position, then the mean cross-entropy over labelled tokens), or for
DPO the summed answer log-probs from the full logits, the reference with
`model.disable_adapter()`, and `-logsigmoid(beta * margin)`. The model built here is also the
one handed to TRL (`trl_side.py`), so both baselines train the same peft model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deltatune.bench.workloads import (BETAS, DPO_BETA, EPS, LORA_ALPHA, LORA_DROPOUT, LORA_R, LORA_TARGETS,
                                       MAX_GRAD_NORM, WEIGHT_DECAY, BenchSpec, seeded_adapter_init)
from deltatune.data.labels import IGNORE_INDEX


def build_hf_model(spec: BenchSpec):
    """The baseline's model: fp32 from the folder; LoRA by peft; QLoRA over transformers'
    bitsandbytes 4-bit loading (NF4, double quant, fp32 compute). Same init as deltatune's."""
    from transformers import AutoModelForCausalLM

    workload = spec.spec
    torch.manual_seed(spec.seed)
    if workload.method == "qlora":
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.float32)
        model = AutoModelForCausalLM.from_pretrained(spec.model, quantization_config=quant, device_map="cpu",
                                                     dtype=torch.float32)  # else bf16 (transformers >= 5.2x)
    else:
        model = AutoModelForCausalLM.from_pretrained(spec.model, dtype=torch.float32)
    if workload.adapter:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules=LORA_TARGETS,
                            task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
        seeded_adapter_init(model, spec.seed)
    model.train()
    return model


class HfLoopSide:
    """The minimal loop's model, optimiser and step."""

    def __init__(self, spec: BenchSpec):
        from deltatune.data.batching import collate
        from deltatune.data.preference import collate_pairs

        self.model = build_hf_model(spec)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # the fused kernel, as deltatune's and TRL's: the strongest baseline gets the fastest AdamW
        self.optimizer = torch.optim.AdamW(self.params, lr=spec.learning_rate, betas=BETAS, eps=EPS,
                                           weight_decay=WEIGHT_DECAY,
                                           fused=all(p.device.type in ("cpu", "cuda") for p in self.params))
        self.loss_fn = dpo_loss if spec.spec.objective == "dpo" else sft_loss
        self.collate_fn = collate_pairs if spec.spec.objective == "dpo" else collate
        self.pad_id = spec.pad_id
        loss = ("sigmoid DPO from full logits, reference via peft disable_adapter()" if spec.spec.objective == "dpo"
                else "model(**batch).loss (logits at every position)")
        self.info = {"trainable_params": sum(p.numel() for p in self.params),
                     "settings": {"loss": loss, "optimiser": "torch.optim.AdamW (fused kernel where it applies)"}}

    def collate(self, examples: list[dict]) -> dict:
        return self.collate_fn(examples, self.pad_id)

    def step(self, batch: dict) -> float:
        loss = self.loss_fn(self.model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, MAX_GRAD_NORM)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach().item()


def sft_loss(model, batch: dict) -> torch.Tensor:
    """transformers' own loss: logits (B, T, V) everywhere, mean CE over labelled next tokens."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss


def answer_logps(model, batch: dict) -> torch.Tensor:
    """(2B,) summed log-probs of each row's labelled tokens, from the full logits."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]  # (2B, T-1, V)
    labels = batch["labels"][:, 1:]  # (2B, T-1): position t predicts token t + 1
    mask = labels != IGNORE_INDEX
    logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logps * mask).sum(-1)


def dpo_loss(model, batch: dict, beta: float = DPO_BETA) -> torch.Tensor:
    """Sigmoid DPO (Rafailov et al. 2023), the reference being the base (peft adapter disabled)."""
    policy = answer_logps(model, batch)
    with torch.no_grad(), model.disable_adapter():
        reference = answer_logps(model, batch)
    pc, pr = policy.chunk(2)
    rc, rr = reference.chunk(2)
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()
