"""Data-parallel training across processes started by ``torchrun``.

``torchrun --nproc-per-node N -m gentoolkit fit ...`` starts N copies of the
command. Each takes its slice of every global batch (``--batch-size`` is the
global batch, split evenly between processes), gradients are averaged before
every optimiser step, epoch metrics are summed over all processes, and only
rank 0 writes the run directory. ``gloo`` is used on CPU, ``nccl`` on CUDA.

Gradients are averaged by hooks rather than by wrapping the model in
DistributedDataParallel: trainers call model methods other than ``forward``
(``encode``, ``netd``...), which DDP does not follow, and hooks work for every
trainer a plugin brings without changing it. As in DDP, the averaging overlaps
the backward pass: an optimiser's gradients are grouped into buckets of about
``BUCKET_BYTES``, and a bucket's all-reduce starts as soon as the backward pass
has produced all of its gradients, while the rest is still being computed.
``Trainer.optimize`` waits for them before clipping; a trainer that steps on
its own is covered by an optimiser step hook, which averages what is left.
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
from torch.utils.hooks import RemovableHandle

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
        """Sum each tensor over all processes (in a fixed key order, so collectives line up);
        every process has the same keys, so none of them calls a collective for no values."""
        if not self.enabled or not values:
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


BUCKET_BYTES = 4 * 2**20  # gradients per all-reduce: big enough to amortise a call, small enough to overlap


class _Bucket:
    """Gradients of some parameters that are averaged by one all-reduce.

    ``seen`` holds the gradient tensor each parameter had at its last accumulation. The
    all-reduce starts once every parameter's current gradient has been seen; an accumulation
    after that (a second backward pass, or a gradient replaced by ``zero_grad``) makes the
    bucket stale, and it is averaged again when the gradients are needed. Every process takes
    the same decisions in the same order, so their collectives line up."""

    def __init__(self, params: list[torch.nn.Parameter], hooked: bool):
        self.params, self.hooked = params, hooked
        self.seen: dict[torch.nn.Parameter, Tensor] = {}
        self.flat: Tensor | None = None
        self.work: dist.Work | None = None
        self.stale = False
        self.done = False  # averaged for the current step; the next accumulation starts a new one

    def accumulated(self, param: torch.nn.Parameter) -> bool:
        """Note ``param``'s new gradient; True when the bucket is complete and can start."""
        if self.done:
            self.seen, self.work, self.flat, self.stale, self.done = {}, None, None, False, False
        if self.work is not None:
            self.stale = True
        self.seen[param] = param.grad
        # the scan over every parameter only once each has been seen, not at every hook call
        return self.work is None and len(self.seen) == len(self.params) and self.complete()

    def complete(self) -> bool:
        return all(p.grad is not None and self.seen.get(p) is p.grad for p in self.params)

    def start(self) -> None:
        self.flat = torch.cat([p.grad.reshape(-1) for p in self.params])
        self.work = dist.all_reduce(self.flat, async_op=True)

    def finish(self, world_size: int) -> bool:
        """Write the average into the gradients; True if it came from the overlapped all-reduce."""
        overlapped = self.work is not None and not self.stale and self.complete()
        if self.work is not None:
            self.work.wait()  # a stale one too, so that every process's collectives stay in step
        grads = [p.grad for p in self.params if p.grad is not None]
        if not overlapped and grads:
            self.flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(self.flat)
        if grads:
            self.flat /= world_size
            torch._foreach_copy_(grads, [part.view_as(g) for part, g in
                                         zip(self.flat.split([g.numel() for g in grads]), grads, strict=True)])
        self.work, self.flat, self.done = None, None, True
        return overlapped


class GradientAverager:
    """Averages every optimiser's gradients over the processes, overlapping the backward pass."""

    def __init__(self, world_size: int, bucket_bytes: int = BUCKET_BYTES):
        self.world_size, self.bucket_bytes = world_size, bucket_bytes
        self.buckets: dict[int, list[_Bucket]] = {}  # by id() of the optimiser
        self.handles: list[RemovableHandle] = []
        self.overlapped = self.averaged = 0  # buckets averaged during / after the backward pass

    def watch(self, optimizer: torch.optim.Optimizer) -> list[_Bucket]:
        """The optimiser's buckets, made at its first step: parameters in reverse order, roughly
        the order in which the backward pass produces their gradients."""
        if id(optimizer) in self.buckets:
            return self.buckets[id(optimizer)]
        buckets, current, size = [], [], 0
        params = [p for group in optimizer.param_groups for p in group["params"]][::-1]
        for param in params:
            if current and (size >= self.bucket_bytes or param.dtype != current[-1].dtype
                            or param.requires_grad != current[-1].requires_grad):
                buckets.append(_Bucket(current, current[-1].requires_grad))
                current, size = [], 0
            current.append(param)
            size += param.numel() * param.element_size()
        if current:
            buckets.append(_Bucket(current, current[-1].requires_grad))
        for bucket in buckets:
            if bucket.hooked:  # a parameter frozen now is never averaged early, only when stepped
                for param in bucket.params:
                    self.handles.append(param.register_post_accumulate_grad_hook(self._hook(bucket)))
        self.buckets[id(optimizer)] = buckets
        return buckets

    @staticmethod
    def _hook(bucket: _Bucket):
        def accumulated(param: torch.nn.Parameter) -> None:
            if bucket.accumulated(param):
                bucket.start()
        return accumulated

    def average(self, optimizer: torch.optim.Optimizer) -> None:
        """Make the optimiser's gradients the average over all processes (once per step)."""
        for bucket in self.watch(optimizer):
            if not bucket.done:
                overlapped = bucket.finish(self.world_size)
                self.overlapped += overlapped
                self.averaged += not overlapped

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


_averager: GradientAverager | None = None  # while this process trains under torchrun


def average_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Average the optimiser's gradients over the training processes now (a no-op in one
    process). Call between backward and anything that reads the gradients, like clipping."""
    if _averager is not None:
        _averager.average(optimizer)


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
    global _averager
    _averager = GradientAverager(world_size)
    hook = register_optimizer_step_pre_hook(lambda optimizer, args, kwargs: average_gradients(optimizer))
    try:
        yield Group(dist.get_rank(), world_size, device), device
    finally:
        hook.remove()
        _averager.close()
        _averager = None
        dist.destroy_process_group()
