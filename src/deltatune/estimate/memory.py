"""Peak memory of a run, from its parts (what each is, and how it combines into the peak).

    weights      every parameter and buffer as held: the dtype it is loaded in, a QLoRA weight
                 packed (4 bits + its scales), the method's own tensors in fp32. On the CPU a
                 base loaded in its stored dtype stays a view of the memory-mapped safetensors
                 file, whose pages stay resident while any tensor of it lives: the file's bytes
                 + what the method added. QLoRA's load copies the unquantised tensors out of
                 the file after quantising (the mapping closes), so there every tensor counts
                 as held: the packed layers + the fp32 rest.
    gradients    4 bytes per trainable parameter (fp32 master weights).
    optimiser    AdamW's two moments: 8 bytes per trainable parameter.
    activations  what autograd keeps for backward at the run's largest micro-batch, measured by
                 the probe (`estimate.probe`), + the head's backward transient (the gradient of
                 the labelled positions' fp32 log-softmax and logits: 2 x N x V x 4 bytes; one
                 chunk's with `train.ce_chunk_tokens`). Gradient checkpointing keeps each block's
                 input (cells x H) and one block's saved tensors at a time instead.
    allocator    memory the allocator holds beyond live tensors: on the CPU glibc keeps freed
                 activation blocks in its heap (its dynamic mmap threshold), ALLOCATOR_FIXED +
                 ALLOCATOR_SHARE x saved activations; fitted on SmolLM2-135M (LoRA batches of
                 2, 4, 8; QLoRA and full fine-tuning at 8): within 3% on each.
    baseline     the process before any model: python + torch + transformers + deltatune,
                 measured once (`estimate.calibrate.process_baseline_bytes`).
    replay       the replay phase before training (the base model answering the replay
                 prompts, unless cached, and the teacher's top-k pass): it does not add to
                 training, it is a separate peak.

They do not all peak together. Weight gradients appear as backward walks down the blocks and
frees their activations, so during backward the live total is about the larger of the two:

    train peak = baseline + weights + optimiser + max(activations + allocator, gradients)
                 (+ gradients with grad_accum > 1: the first micro-batches' gradients are held)
    peak       = max(train peak, the optimiser step's baseline + weights + optimiser +
                 gradients, the replay phase)

On CUDA the same parts give device memory (no process baseline, no mapped file) with a
smaller allocator share: that case is not calibrated yet.
"""

from __future__ import annotations

import dataclasses

MIB = 2**20
ALLOCATOR_FIXED = {"cpu": 133 * MIB, "cuda": 0}
ALLOCATOR_SHARE = {"cpu": 0.53, "cuda": 0.10}
PART_NAMES = ("baseline", "weights", "gradients", "optimizer", "activations", "allocator", "replay")


@dataclasses.dataclass
class Activations:
    """Saved activations as a function of the micro-batch (from the probe at the peak batch):
    the blocks' part grows with token cells, the rest (head, loss) with labelled positions."""

    per_cell_per_block: float
    per_label_rest: float
    layers: int
    hidden: int
    act_bytes: int  # bytes per hidden value between blocks (2 for a bf16/fp16 base, else 4)
    vocab: int
    chunk: int | None  # train.ce_chunk_tokens

    def saved(self, batch, checkpointing: bool = False) -> float:
        rest = self.per_label_rest * batch.labelled
        block = self.per_cell_per_block * batch.cells
        if checkpointing:  # each block's input kept, one block's activations rebuilt at a time
            return rest + self.layers * batch.cells * self.hidden * self.act_bytes + block
        return rest + self.layers * block

    def head_transient(self, batch) -> float:
        positions = batch.labelled if self.chunk is None else min(batch.labelled, self.chunk)
        return 2 * positions * self.vocab * 4


@dataclasses.dataclass
class Memory:
    baseline: int
    weights: int
    gradients: int
    optimizer: int
    activations: int  # saved for backward + the head's transient
    allocator: int
    replay: int  # the replay phase's own peak (0: no replay)
    train_peak: int
    peak: int
    limited_by: str  # "training", "optimiser step" or "replay"

    def breakdown(self) -> dict:
        return {name: int(getattr(self, name)) for name in PART_NAMES}


def memory_estimate(*, baseline: int, weights: int, trainable: int, activations: float, device_type: str,
                    grad_accum: int, replay_extra: float = 0.0) -> Memory:
    """Combine the parts as the module docstring says; `activations` = saved + head transient,
    `replay_extra` = the replay phase's peak above baseline + weights."""
    saved = float(activations)
    allocator = ALLOCATOR_FIXED.get(device_type, 0) + ALLOCATOR_SHARE.get(device_type, 0.1) * saved
    gradients, optimizer = 4 * trainable, 8 * trainable
    held = gradients if grad_accum > 1 else 0
    train_peak = baseline + weights + optimizer + max(saved + allocator + held, gradients)
    step_peak = baseline + weights + optimizer + gradients + ALLOCATOR_FIXED.get(device_type, 0)
    replay_peak = baseline + weights + replay_extra + ALLOCATOR_FIXED.get(device_type, 0) if replay_extra else 0
    candidates = {"training": train_peak, "optimiser step": step_peak, "replay": replay_peak}
    limited_by = max(candidates, key=candidates.get)
    return Memory(int(baseline), int(weights), int(gradients), int(optimizer), int(saved), int(allocator),
                  int(replay_peak), int(train_peak), int(candidates[limited_by]), limited_by)


def resident_weights(base, counts, load_dtype, device, releases_file: bool = False) -> tuple[int, str]:
    """(bytes the weights hold, how): the mapped file + the method's tensors, or every tensor.
    `releases_file`: the method's own load lets go of the mapping (QLoRA, after quantising:
    `deltatune.models.file_pages`), so only the tensors as held count."""
    if base.maps_file(load_dtype, device) and not releases_file:
        return base.file_bytes + counts.new_bytes, (
            f"{base.file_bytes / MIB:,.0f} MiB mapped from the safetensors file + "
            f"{counts.new_bytes / MIB:,.1f} MiB the method added")
    return counts.weight_bytes, "every tensor as loaded"


def replay_phase_bytes(cfg, base_config, counts, replay_examples: list[dict], act_bytes: int,
                       answering: bool = True) -> tuple[float, str]:
    """(the replay phase's peak above baseline + weights, what sets it): the base answering the
    replay prompts (a KV cache for `eval.batch_size` rows of prompt + replay_max_new_tokens; only
    when the answers are not cached: `answering`) or the teacher's top-k pass (no grad, 8 rows at
    a time)."""
    from deltatune.estimate.model_info import architecture

    if not replay_examples:
        return 0.0, ""
    text = getattr(base_config, "text_config", None) or base_config
    arch = architecture(base_config)
    heads = int(getattr(text, "num_attention_heads", 1) or 1)
    kv_width = int(getattr(text, "num_key_value_heads", None) or heads) * arch["attention_width"] // heads
    longest = max(len(ex["input_ids"]) for ex in replay_examples)
    prompt = max(len(ex["input_ids"]) - sum(1 for label in ex["labels"] if label != -100) for ex in replay_examples)
    rows = min(cfg.eval.batch_size, len(replay_examples))
    cache = 2 * counts.layers * kv_width * act_bytes * rows * (prompt + cfg.data.replay_max_new_tokens)
    answering = (cache + rows * counts.vocab * 4) if answering else 0.0
    teacher = 0.0
    if cfg.data.replay_topk:
        try:
            from deltatune.replay.teacher import TOPK_CHUNK_POSITIONS as chunk
        except ImportError:
            chunk = None
        block_width = counts.block_matmul / max(counts.hidden, 1)  # every block output at once, at most
        labelled = 8 * longest
        positions = labelled if chunk is None else min(labelled, chunk)
        teacher = 8 * longest * block_width * act_bytes + 2 * positions * counts.vocab * 4
    if answering and answering >= teacher:
        return answering, f"answering the replay prompts ({rows} rows, KV cache; skipped once cached)"
    return teacher, "the replay teacher's top-k pass" if teacher else ""
