"""Multi-process training with torch.distributed: one process per GPU (NCCL), or per CPU share (gloo).

``torchrun -m imgclass train ...`` (or ``imgclass train ... --nproc-per-node N``, which re-launches
itself through torchrun) starts the processes and sets WORLD_SIZE, RANK and LOCAL_RANK. Every rank
decodes the whole dataset (cheap, and every rank then agrees on classes, split and order), runs the
frozen trunk on its own contiguous shard and all-gathers the activations, so the costly stage is
split N ways. Fine-tuning splits each global batch of ``batch_size`` images over the ranks, so N
processes take the same steps as one and reach the same accuracy. Rank 0 alone writes files and
prints; the others' stderr goes to /dev/null (their errors still reach the terminal, one line).

A process outside torchrun is a world of one: every function here is then a no-op.
"""
from __future__ import annotations

import logging
import os
import signal
from contextlib import contextmanager, redirect_stderr
from typing import Iterator, NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ImgclassError


class World(NamedTuple):
    """This process's place among the training processes."""

    rank: int
    size: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files and prints."""
        return self.rank == 0


# Set in the processes ``launch`` starts: their launcher, not rank 0, reports a Ctrl-C.
LAUNCHED = "IMGCLASS_LAUNCHED"


def env_rank() -> int:
    """This process's global rank as torchrun set it (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def setup(device: str) -> World:
    """Join the process group torchrun prepared, on ``cuda:LOCAL_RANK`` (NCCL) or the CPU (gloo).

    Args:
        device: "cpu" or "cuda" (already resolved from "auto").
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(0, 1, torch.device(device))
    if device == "cuda":
        local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl", device_id=local)
    else:
        local = torch.device("cpu")
        dist.init_process_group("gloo")
    return World(dist.get_rank(), size, local)


def teardown(world: World) -> None:
    """Leave the process group (a world of one has none)."""
    if world.size > 1:
        dist.destroy_process_group()


@contextmanager
def quiet_unless_main(world: World) -> Iterator[None]:
    """Silence progress bars and logs on ranks other than 0; an exception still propagates to be reported."""
    if world.main:
        yield
        return
    with open(os.devnull, "w") as devnull, redirect_stderr(devnull):
        yield


def barrier(world: World) -> None:
    """Wait for every rank."""
    if world.size > 1:
        dist.barrier()


@contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block before the others, so they find what it cached instead of redoing it."""
    if not world.main:
        barrier(world)
    yield
    if world.main:
        barrier(world)


def shard(n: int, world: World, rank: int | None = None) -> slice:
    """Rank ``rank``'s (default: this one's) contiguous share of ``n`` items; shares differ by at most one.

    Example:
        >>> [shard(5, World(0, 2, torch.device("cpu")), r) for r in (0, 1)]
        [slice(0, 2, None), slice(2, 5, None)]
    """
    rank = world.rank if rank is None else rank
    return slice(n * rank // world.size, n * (rank + 1) // world.size)


def gather_rows(local: torch.Tensor, n: int, world: World) -> torch.Tensor:
    """Concatenate every rank's ``shard(n)`` rows in rank order: the ``n`` rows one process would have."""
    if world.size == 1:
        return local
    sizes = [len(range(n)[shard(n, world, r)]) for r in range(world.size)]
    # all_gather needs equal shapes: pad every share to the largest, then cut the padding off.
    padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def all_sum(values: list[float], world: World) -> list[float]:
    """Element-wise sums of ``values`` over the ranks."""
    return _all_reduce(values, world, dist.ReduceOp.SUM)


def all_min(values: list[float], world: World) -> list[float]:
    """Element-wise minimums of ``values`` over the ranks (all ranks agree, e.g. on whether work is done)."""
    return _all_reduce(values, world, dist.ReduceOp.MIN)


def _all_reduce(values: list[float], world: World, op) -> list[float]:
    if world.size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t, op=op)
    return t.tolist()


def broadcast_object(obj, world: World):
    """Rank 0's ``obj`` (any picklable value), on every rank."""
    if world.size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_module(module: nn.Module, world: World) -> None:
    """Give every rank rank 0's parameters of ``module`` (after a fit that may differ in the last bit)."""
    if world.size > 1:
        for p in module.parameters():
            dist.broadcast(p.data, 0)


def data_parallel(module: nn.Module, trainable: list[nn.Parameter], world: World) -> nn.Module:
    """``module`` whose gradients of ``trainable`` are averaged over the ranks (DDP); itself in a world of one.

    The other parameters stop needing gradients: DDP waits for a gradient of every parameter that needs one.
    """
    if world.size == 1:
        return module
    keep = {id(p) for p in trainable}
    for p in module.parameters():
        p.requires_grad_(id(p) in keep)
    # BatchNorm statistics are frozen (eval mode): equal on every rank, no need to sync them each step.
    return nn.parallel.DistributedDataParallel(
        module, device_ids=[world.device.index] if world.device.type == "cuda" else None, forward_sync_buffers=False)


def launch(argv: list[str], nproc: int) -> None:
    """Run ``python -m imgclass ARGV`` as ``nproc`` processes on this machine through torchrun, and wait.

    Raises:
        ImgclassError: a process failed (it printed its own error) or the launcher was stopped by a signal.
        KeyboardInterrupt: Ctrl-C (the processes stop with the launcher).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if "WORLD_SIZE" in os.environ:
        raise ImgclassError("already running under torchrun; drop --nproc-per-node")
    # NVLink SHARP (NVLS) multicast fails on some multi-GPU hosts; plain NCCL rings are as fast at this size.
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    # torchrun would give each process 1 thread (and warn); share the cores instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ[LAUNCHED] = "1"
    # Its per-process failure lines would repeat what the processes and the error raised below say.
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    # And its "Received 2 death signal, shutting down workers" what the Ctrl-C line below says.
    logging.getLogger("torch.distributed.elastic.agent.server.api").setLevel(logging.ERROR)
    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "imgclass", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        codes = ", ".join(f"rank {rank}: {failure.exitcode}" for rank, failure in sorted(e.failures.items()))
        raise ImgclassError(f"{len(e.failures)} of {nproc} training processes failed (exit codes {codes}; "
                            "see the errors above)") from None
    except SignalException as e:
        if e.sigval == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise ImgclassError(f"training stopped by {e.sigval.name}; continue with --resume MODEL_DIR/checkpoint.pth.tar") from None
