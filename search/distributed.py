"""Who am I and where do I run: one process group setup for every launcher.

Shared by full-scale retraining (``search.retrain``) and data-parallel supernet training
(``search.proxy.supernet.training``).

torchrun (env RANK / WORLD_SIZE / LOCAL_RANK), Slurm (srun + torchrun, or srun alone with one
task per GPU: SLURM_PROCID / SLURM_NTASKS, MASTER_ADDR from the node list as the official code
derives it), Ray Train (``TorchTrainer`` already joined the group and picked the device) and
local spawning of ``nproc`` processes (torch.multiprocessing; CPU tests with gloo).
"""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from search_space.errors import UsageError


class Processes(Protocol):
    """Where and in how many processes a command runs (``search.retrain.config.Processes``
    is one; any object with these two attributes will do)."""

    @property
    def torch_device(self) -> str: ...

    @property
    def nproc(self) -> int: ...


def log(msg: str, rank: int = 0) -> None:
    """Print from rank 0 only (every rank prints the same thing otherwise)."""
    if rank == 0:
        print(msg, flush=True)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def check_torch_device(name: str) -> None:
    """--torch-device names a device this machine has (one line otherwise)."""
    if name in ("auto", "cpu"):
        return
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--torch-device {name}: CUDA is not available here (use auto or cpu)")
        index = name.partition(":")[2]
        if index and int(index) >= torch.cuda.device_count():
            raise UsageError(f"--torch-device {name}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        return
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError("--torch-device mps: MPS is not available here (use auto or cpu)")
        return
    raise UsageError(f"--torch-device {name}: allowed auto, cpu, cuda, cuda:N, mps")


def env_int(name: str, default: int, low: int = 0) -> int:
    """An integer the launcher (torchrun, srun) put in the environment; a value that is not one
    is a one-line UsageError naming the variable, not a traceback from ``int()``."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < low:
        raise UsageError(f"${name}={text!r}: allowed integers >= {low} (set by the launcher: "
                         "torchrun or srun; unset it to run one process)")
    return value


def _check_rank(name: str, rank: int, world: int) -> None:
    """A rank the launcher gave (``$RANK``, ``$SLURM_PROCID``) is one of the world's."""
    if rank >= world:
        raise UsageError(f"${name}={rank}: allowed 0..{world - 1} (one per process the launcher "
                         "started)")


def _slurm_env() -> None:
    """srun without torchrun (one task per GPU): derive torch's env vars as the official code does."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    ntasks = env_int("SLURM_NTASKS", 1, low=1)
    if ntasks <= 1:
        return
    env_int("SLURM_PROCID", 0)
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodelist:
        raise UsageError("$SLURM_NTASKS > 1 without $SLURM_JOB_NODELIST: cannot find the master "
                         "node (launch with srun inside an allocation, or with torchrun)")
    first = subprocess.run(["scontrol", "show", "hostnames", nodelist], check=True,
                           capture_output=True, text=True).stdout.split()[0]
    os.environ.setdefault("MASTER_ADDR", first)
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ["WORLD_SIZE"] = str(ntasks)
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")


def _pick_device(torch_device: str, local_rank: int) -> torch.device:
    if torch_device == "auto":
        torch_device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch_device == "cuda":
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device(torch_device)


def setup_distributed(torch_device: str, device: torch.device | None = None) -> DistContext:
    """Read the launcher's env, pick the device, and join the process group if there is one.

    ``device`` is given by launchers that chose it themselves (Ray Train)."""
    _slurm_env()
    world, rank = env_int("WORLD_SIZE", 1, low=1), env_int("RANK", 0)
    local_rank = env_int("LOCAL_RANK", 0)
    _check_rank("RANK", rank, world)
    if device is None:
        device = _pick_device(torch_device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                init_method="env://", world_size=world, rank=rank)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)


def launched_externally() -> bool:
    """A launcher (torchrun, srun with several tasks) already started one process per rank."""
    return ("RANK" in os.environ and "WORLD_SIZE" in os.environ) or (
        "SLURM_PROCID" in os.environ and env_int("SLURM_NTASKS", 1, low=1) > 1)


def launcher_shard() -> tuple[int, int]:
    """(rank, world size) of this process when a launcher started the ranks, else (0, 1): the
    share of a up-front check (e.g. of the images) each rank does before training starts."""
    if not launched_externally():
        return 0, 1
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world = env_int("RANK", 0), env_int("WORLD_SIZE", 1, low=1)
        name = "RANK"
    else:
        rank, world = env_int("SLURM_PROCID", 0), env_int("SLURM_NTASKS", 1, low=1)
        name = "SLURM_PROCID"
    _check_rank(name, rank, world)
    return rank, world


def will_spawn(processes: Processes) -> bool:
    return processes.nproc > 1 and not launched_externally()


def _uses_cpu(processes: Processes) -> bool:
    return processes.torch_device == "cpu" or (processes.torch_device == "auto"
                                               and not torch.cuda.is_available())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_and_leave(fn: Callable[[Any], Any], payload: Any) -> None:
    try:
        fn(payload)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _spawn_entry(local_rank: int, fn: Callable[[Any], Any], payload: Any,
                 processes: Processes, port: int) -> None:
    nproc = processes.nproc
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      LOCAL_RANK=str(local_rank), WORLD_SIZE=str(nproc),
                      LOCAL_WORLD_SIZE=str(nproc))
    if _uses_cpu(processes):
        # N processes on one CPU: share the cores instead of oversubscribing them N times.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    _run_and_leave(fn, payload)


def run_on_ranks(fn: Callable[[Any], Any], payload: Any, processes: Processes) -> None:
    """``fn(payload)`` here (a launcher started this rank, or nproc 1) or in nproc processes.

    ``fn`` is a module-level function and ``payload`` a picklable config (spawned interpreters
    receive both pickled)."""
    if not will_spawn(processes):
        _run_and_leave(fn, payload)
        return
    # Never fork this process: once it has run a backward pass whose autograd engine started
    # its device threads, a forked child's backward raises "Unable to handle autograd's
    # threading in combination with fork-based multiprocessing" (seen in the test suite), and
    # CUDA cannot be used in forked children at all. On the CPU under Linux the ranks come from
    # a fork server that has only imported torch and ``fn``'s module (never ran autograd):
    # fresh, and the imports are paid once per calling process, not per rank and call);
    # elsewhere fresh interpreters.
    method = "forkserver" if _uses_cpu(processes) and sys.platform == "linux" else "spawn"
    if method == "forkserver":
        mp.get_context("forkserver").set_forkserver_preload(["torch", fn.__module__])
    mp.start_processes(_spawn_entry, args=(fn, payload, processes, _free_port()),
                       nprocs=processes.nproc, join=True, start_method=method)


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum over the ranks (float64: exact for counts)."""
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    if ctx.distributed:
        dist.all_reduce(t)
    return t.tolist()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def param_digest(model: nn.Module) -> str:
    """sha256 of every parameter's bytes: equal on all ranks iff DDP kept them in sync."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()
