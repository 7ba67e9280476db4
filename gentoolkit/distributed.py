"""Data-parallel training across processes started by ``torchrun``.

``torchrun --nproc-per-node N -m gentoolkit fit ...`` starts N copies of the
command. Each takes its slice of every global batch (``--batch-size`` is the
global batch, split evenly between processes), gradients are averaged before
every optimiser step, epoch metrics are summed over all processes, and only
rank 0 writes the run directory. ``gloo`` is used on CPU, ``nccl`` on CUDA.

Gradients are averaged by a global optimiser step hook rather than by wrapping
the model in DistributedDataParallel: trainers call model methods other than
``forward`` (``encode``, ``netd``...), which DDP does not follow, and the hook
works for every trainer a plugin brings without changing it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim.optimizer import register_optimizer_step_pre_hook

from gentoolkit.errors import GentoolError


@dataclass(frozen=True)
class Group:
    """This process's place among the training processes."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")  # where collectives run (CUDA for nccl)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, index: Tensor) -> Tensor:
        """This process's slice of a global batch of indices."""
        return index[self.rank::self.world_size] if self.enabled else index

    def sum(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """Sum each tensor over all processes (in a fixed key order, so collectives line up)."""
        if not self.enabled:
            return values
        keys = sorted(values)
        flat = torch.stack([values[k].detach().double().reshape(()).to(self.device) for k in keys])
        dist.all_reduce(flat)
        return {k: flat[i] for i, k in enumerate(keys)}

    def any(self, *flags: bool) -> list[bool]:
        """Each flag, raised if it is raised on any process."""
        if not self.enabled:
            return list(flags)
        votes = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(votes, op=dist.ReduceOp.MAX)
        return [bool(v) for v in votes]

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sync_module(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every process."""
        if self.enabled:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)


SINGLE = Group()


def _average_gradients(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


@contextmanager
def process_group(device: torch.device) -> Iterator[tuple[Group, torch.device]]:
    """Join the torchrun process group when there is one; yields the group and this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        yield SINGLE, device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend)
    except (RuntimeError, ValueError) as exc:
        raise GentoolError(f"could not join the torchrun process group ({exc}); "
                           "start with torchrun --nproc-per-node N -m gentoolkit fit ...") from None
    hook = register_optimizer_step_pre_hook(_average_gradients)
    try:
        yield Group(dist.get_rank(), world_size, device), device
    finally:
        hook.remove()
        dist.destroy_process_group()
