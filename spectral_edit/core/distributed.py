"""Fitting across processes with :mod:`torch.distributed`: the process group's rank and
size, each rank's share of the demonstrations, and the reductions the fitter needs.

Every rank captures its own contiguous share of the demonstrations
(:func:`share`), so that gathering rows in rank order restores the file's order. The
fitter's sums are all-reduced (:func:`all_reduce_sum`); the thin SVD route's kept
activations are gathered (:func:`all_gather_rows`). With the NCCL backend the tensors
travel through the rank's current CUDA device and come back to where they live.

:func:`process_group_from_environment` starts the default group where a launcher
(``torchrun``) has set ``WORLD_SIZE`` > 1 and none is running yet: NCCL where CUDA is
available, else Gloo.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised default process group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def share(count: int, rank: int, size: int) -> range:
    """Rank ``rank``'s contiguous share of ``count`` items split over ``size`` ranks (the
    first ``count % size`` ranks get one more); the shares in rank order cover
    ``range(count)`` in order.

    Raises:
        ValueError: fewer items than ranks (a rank would fit on nothing).
    """
    if count < size:
        raise ValueError(f"{count} demonstrations cannot be split over {size} processes")
    base, extra = divmod(count, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def _comm_device(tensor: torch.Tensor) -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def all_reduce_sum(tensor: torch.Tensor) -> None:
    """Sum ``tensor`` over every rank, in place (a no-op in one process)."""
    if world()[1] == 1:
        return
    device = _comm_device(tensor)
    if device == tensor.device:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return
    # through the GPU one slice at a time: a layer's d × d sums, not all L of them
    for part in tensor.unsqueeze(0) if tensor.ndim < 3 else tensor:
        moved = part.to(device)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        part.copy_(moved)


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` ``(n_r, ...)`` concatenated along rows in rank order (the
    row counts may differ; trailing shapes must agree). One process: ``tensor``."""
    rank, size = world()
    if size == 1:
        return tensor
    device = _comm_device(tensor)
    counts = torch.zeros(size, dtype=torch.long, device=device)
    counts[rank] = tensor.shape[0]
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    widest = int(counts.max())
    padded = torch.zeros((widest, *tensor.shape[1:]), dtype=tensor.dtype, device=device)
    padded[: tensor.shape[0]] = tensor.to(device)
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded)
    rows = [part[: int(n)] for part, n in zip(parts, counts.tolist(), strict=True)]
    return torch.cat(rows).to(tensor.device)


def launched_ranks() -> int:
    """The world size a launcher (``torchrun``) set in ``WORLD_SIZE``; 1 without one."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


@contextmanager
def process_group_from_environment() -> Iterator[tuple[int, int]]:
    """Within the block, the default process group of a ``torchrun`` launch (started
    here where ``WORLD_SIZE`` > 1 and none runs, destroyed on exit; CUDA ranks use their
    ``LOCAL_RANK`` device and NCCL, others Gloo). Yields ``(rank, world size)``."""
    started = False
    if launched_ranks() > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        started = True
    try:
        yield world()
    finally:
        if started:
            dist.destroy_process_group()
