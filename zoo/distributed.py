"""Data-parallel helpers for the engine: process group setup, rank shares, reductions.

``torchrun --nproc_per_node=N -m zoo train RECIPE`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; a plain ``python -m zoo train`` is a world of one, where every helper here is a
no-op, so the single-process path never touches ``torch.distributed``.

Gradients are averaged by `average_gradients` after the backward passes of each optimizer step,
rather than by wrapping the model in ``DistributedDataParallel``: DDP only syncs gradients when
the forward pass goes through its own ``forward``, and a task may call any method of the model
(``forward_features``, ``decode``...) or read ``model.cfg``, which would silently skip the sync or
fail. The result is the same average DDP computes, in one flat all-reduce per dtype per step.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """Where this process sits: its rank, the number of processes and its device."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 is the one process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The device ``train.device`` names: ``auto`` picks cuda, then mps, then cpu.

    Under torchrun each process takes the CUDA device of its local rank.

    Raises:
        ValueError: the device is not available here (e.g. ``cuda`` on a CPU-only machine).
    """
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"train.device '{name}' is not a device (auto, cpu, cuda...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("train.device is 'cuda' but no CUDA device is available; use cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("train.device is 'mps' but MPS is not available; use cpu")
    return device


def setup(device_name: str) -> World:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if size == 1:
        return World(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    world = World(dist.get_rank(), dist.get_world_size(), local_rank, device)
    logger.debug("rank %d of %d on %s", world.rank, world.size, device)
    return world


def teardown(world: World) -> None:
    """Leave the process group (after every rank has finished)."""
    if world.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(world: World) -> None:
    """Wait for every rank (a no-op in a world of one)."""
    if world.distributed:
        dist.barrier()


def share(indices: list[int], world: World) -> list[int]:
    """This rank's part of one global batch: every ``size``-th sample from ``rank``."""
    return indices[world.rank :: world.size]


def all_reduce_sum(values: torch.Tensor, world: World) -> torch.Tensor:
    """Sum a tensor over the ranks (in place; returned for convenience).

    A CPU tensor travels through the process's device, since nccl reduces CUDA tensors only.
    """
    if world.distributed:
        moved = values.to(world.device)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        if moved is not values:
            values.copy_(moved)
    return values


def broadcast_model(model: torch.nn.Module, world: World) -> None:
    """Copy rank 0's parameters and buffers to every rank (as DDP does when it starts)."""
    if world.distributed:
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)


@torch.no_grad()
def average_gradients(params: list[torch.nn.Parameter], world: World) -> None:
    """Replace each gradient by its mean over the ranks.

    A parameter that got no gradient on any rank keeps ``None`` (the optimizer skips it, as in
    one process); one that got a gradient on some ranks only counts zeros on the others.
    """
    if not world.distributed:
        return
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32)
    all_reduce_sum(has_grad, world)
    params = [p for p, n in zip(params, has_grad.tolist()) if n > 0]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for dtype in sorted({p.grad.dtype for p in params}, key=str):  # same order on every rank
        grads = [p.grad for p in params if p.grad.dtype == dtype]
        flat = _flatten_dense_tensors(grads)  # one collective instead of one per tensor
        all_reduce_sum(flat, world).div_(world.size)
        for grad, mean in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(mean)


def all_gather(obj: Any, world: World) -> list[Any]:
    """One picklable object per rank, in rank order (a list of one without torchrun)."""
    if not world.distributed:
        return [obj]
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast(obj: Any, world: World) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
