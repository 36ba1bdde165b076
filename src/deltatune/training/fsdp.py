"""Sharded data parallel (`train.distributed: fsdp`): each process keeps 1/N of every decoder
block's weights, gradients and AdamW state, with torch's FSDP2 (`fully_shard`).

    torchrun --nproc_per_node 2 -m deltatune train CONFIG train.distributed=fsdp

    sharding = shard_for_run(model, installed, cfg.train, group)   # NoSharding unless fsdp over >1 process
    group.all_reduce_grads(sharding.replicated(params))            # what FSDP does not reduce itself
    with sharding.gathered():                                      # every process: full weights for a moment
        if group.is_main: save_checkpoint(...)

What is sharded. Each block of `model.get_decoder().layers` becomes one FSDP2 unit: its
parameters (frozen base weights and the method's trainables alike) are split over the
processes; a block's forward all-gathers them and frees them again after, and its backward
reduce-scatters the gradients, so each process holds only its shard of the gradients and of
the optimiser state. The rest (embeddings, final norm, the head, a method's parameters outside
the blocks such as soft prompts) stays replicated and is all-reduced by the data-parallel code
(`deltatune.training.distributed`) as under `ddp` — it is a small share of a decoder's weights,
and keeping it whole lets every forward path the methods use run unchanged.

The arithmetic is the single-process arithmetic, as under ddp: each process weights its loss
by its share of the step's global units and the gradients are *summed* over processes
(`set_force_sum_reduction_for_comms`), the clipping norm is the norm of the whole gradient
(shards' squares summed over processes), and AdamW steps on the shards.

Checkpoints stay one format for every process count: weights and optimiser state are gathered
to full tensors before rank 0 writes them (`gathered`, `optimizer_state`) and split again on
load (`load_optimizer_state`), so a run sharded over 2 processes resumes in 1 and back. After
the loop every process gathers its blocks for good (`gather_for_good`): rank 0 then evaluates,
saves and generates alone with the plain model, as under ddp.

Methods whose hooks touch the weights outside the forward (Delta-LoRA's base update, AdaLoRA's
budget, FISH Mask's and SAID's preparation, extra loss terms) are refused: their code reads
whole tensors. They run under `ddp`.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist

from deltatune.errors import DeltatuneError

try:  # torch >= 2.6
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # pragma: no cover - older torch: fsdp is refused with the reason
    fully_shard = DTensor = distribute_tensor = None

UNSUPPORTED_HOOKS = ("prepare", "after_optimizer_step", "extra_loss")


def _is_sharded(tensor) -> bool:
    return DTensor is not None and isinstance(tensor, DTensor)


def _full_numel(tensor) -> int:
    return math.prod(tensor.shape)  # a DTensor's shape is the full tensor's


class NoSharding:
    """Every process holds the whole model (one process, or `ddp`): every operation is the plain one."""

    active = False

    def replicated(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """The parameters whose gradients the data-parallel all-reduce must sum: all of them."""
        return params

    @contextlib.contextmanager
    def gathered(self):
        """Full weights on the module for the duration (they always are here)."""
        yield

    def clip_grad_norm(self, params: list[torch.Tensor], max_norm: float) -> float:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def optimizer_state(self, optimizer) -> dict:
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)

    def gather_for_good(self) -> None:
        """After training: nothing is sharded."""

    def summary(self) -> dict | None:
        return None


class FullySharded(NoSharding):
    """The decoder blocks of `model` sharded over the processes of `group` (see module docstring)."""

    active = True

    def __init__(self, model, group):
        from torch.distributed.device_mesh import init_device_mesh

        from deltatune.training.speed import decoder_layers

        self.world = group.world
        total = sum(p.numel() for p in model.parameters())
        device_type = next(model.parameters()).device.type
        mesh = init_device_mesh(device_type, (group.world,))
        self.units = decoder_layers(model, "train.distributed=fsdp")
        for block in self.units:
            fully_shard(block, mesh=mesh, reshard_after_forward=True)
            # a plain sum (each process weighted its loss already): no divide, and SUM, not the
            # PREMUL_SUM a divide factor would otherwise use (gloo has none)
            block.set_gradient_divide_factor(1.0)
            block.set_force_sum_reduction_for_comms(True)
        local = sum((p.to_local() if _is_sharded(p) else p).numel() for p in model.parameters())
        in_blocks = [p for block in self.units for p in block.parameters()]
        self._summary = {"engine": "fsdp", "processes": group.world, "units": len(self.units),
                         "parameters": total, "parameters_this_process": local,
                         "block_parameters": sum(_full_numel(p) for p in in_blocks),
                         "block_parameters_this_process": sum(p.to_local().numel() for p in in_blocks)}

    def replicated(self, params):
        return [p for p in params if not _is_sharded(p)]

    @contextlib.contextmanager
    def gathered(self):
        """Every process all-gathers every block (a collective: call it on all of them); the
        module then holds full tensors until the block is freed again on exit. For reading
        only: writes to the gathered weights are not kept."""
        for block in self.units:
            block.unshard()
        try:
            yield
        finally:
            for block in self.units:
                block.reshard()

    def clip_grad_norm(self, params, max_norm: float) -> float:
        """torch's clip_grad_norm_ over the whole gradient: shards' squares summed over
        processes, the replicated gradients (already equal everywhere) counted once."""
        grads = [p.grad for p in params if p.grad is not None]
        sharded = [g.to_local() for g in grads if _is_sharded(g)]
        whole = [g for g in grads if not _is_sharded(g)]
        square = torch.zeros((), dtype=torch.float64, device=grads[0].device if grads else "cpu")
        for g in sharded:
            square += g.double().pow(2).sum()
        dist.all_reduce(square, op=dist.ReduceOp.SUM)
        for g in whole:
            square += g.double().pow(2).sum()
        norm = math.sqrt(float(square))
        coef = max_norm / (norm + 1e-6)
        if coef < 1.0 and math.isfinite(norm):
            for g in sharded + whole:
                g.mul_(coef)
        return norm

    def optimizer_state(self, optimizer) -> dict:
        """The optimiser's state with every shard gathered to its full tensor (a collective),
        in the layout a single process saves."""
        state = optimizer.state_dict()
        state["state"] = {index: {key: (value.full_tensor() if _is_sharded(value) else value)
                                  for key, value in entry.items()}
                          for index, entry in state["state"].items()}
        return state

    def load_optimizer_state(self, optimizer, state: dict) -> None:
        """Load a full (any-process-count) optimiser state and split it like the parameters."""
        optimizer.load_state_dict(state)
        for group in optimizer.param_groups:
            for param in group["params"]:
                if not _is_sharded(param):
                    continue
                entry = optimizer.state.get(param, {})
                for key, value in list(entry.items()):
                    if torch.is_tensor(value) and not _is_sharded(value) and value.shape == param.shape:
                        entry[key] = distribute_tensor(value, param.device_mesh, param.placements)

    def gather_for_good(self) -> None:
        """Every block gathered and kept whole (a collective): rank 0 goes on alone."""
        for block in self.units:
            block.set_reshard_after_forward(False)
            block.unshard()

    def summary(self) -> dict:
        return self._summary


def check_supported(installed, train_cfg, method_name: str) -> None:
    """fsdp refuses what it cannot run faithfully, before anything is sharded."""
    if fully_shard is None:
        raise DeltatuneError(f"train.distributed=fsdp needs torch >= 2.6 (FSDP2 `fully_shard`); this is torch "
                             f"{torch.__version__}. Upgrade torch or use train.distributed=ddp")
    hooks = [name for name in UNSUPPORTED_HOOKS if getattr(installed.hooks, name, None) is not None]
    if hooks:
        raise DeltatuneError(
            f"train.distributed=fsdp: method {method_name!r} changes or reads whole weights outside the forward "
            f"({', '.join(hooks)}), which sharded weights do not allow; use train.distributed=ddp for it")
    for key in ("compile", "gradient_checkpointing"):
        if getattr(train_cfg, key, False):
            raise DeltatuneError(f"train.{key} is not combined with train.distributed=fsdp yet; set train.{key}=false "
                                 f"or use train.distributed=ddp")


def shard_for_run(model, installed, train_cfg, group) -> NoSharding:
    """FullySharded under `train.distributed: fsdp` with several processes, else NoSharding."""
    if train_cfg.distributed != "fsdp" or group.world == 1:
        return NoSharding()
    from deltatune.methods.core import installed_method

    check_supported(installed, train_cfg, installed_method(model)[0].name)
    return FullySharded(model, group)
