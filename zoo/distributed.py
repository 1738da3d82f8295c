"""Data-parallel helpers for the engine: process group setup, rank shares, reductions.

``torchrun --nproc_per_node=N -m zoo train RECIPE`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; a plain ``python -m zoo train`` is a world of one, where every helper here is a
no-op, so the single-process path never touches ``torch.distributed``.

Training runs the model wrapped in ``DistributedDataParallel``, which starts every rank from rank
0's weights and averages gradients during the backward pass; tasks call the wrapper in ``loss``
(``model(...)``) and unwrap it for anything else.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

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


def resolve_device(name: str, local_rank: int = 0, setting: str = "train.device") -> torch.device:
    """The device ``train.device`` names: ``auto`` picks cuda, then mps, then cpu.

    Under torchrun each process takes the CUDA device of its local rank.

    Args:
        setting: what named the device, for messages (``--device`` for the commands).

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
        raise ValueError(f"{setting} '{name}' is not a device (auto, cpu, cuda...)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{setting} is '{name}' but no CUDA device is available; use cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{setting} is '{name}' but MPS is not available; use cpu")
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


def wrap_ddp(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` under torchrun; the model itself in a world of one.

    A model whose class sets ``find_unused_parameters = True`` (a multitask model, whose steps
    each train one task's parts) gets DDP's search for parameters a step did not use.
    """
    if not world.distributed:
        return model
    device_ids = [world.device.index] if world.device.type == "cuda" else None
    unused = bool(getattr(type(model), "find_unused_parameters", False))
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=unused)


def no_sync(model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip DDP's gradient all-reduce for a micro-batch that is not the step's last."""
    if sync or not isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


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
