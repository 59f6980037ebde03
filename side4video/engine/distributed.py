"""Process-group set-up and the few collectives the engine needs (CPU/gloo and GPU/NCCL alike)."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import sys
import sysconfig
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare_accelerator_env() -> None:
    """Tell DeepSpeed to use its CPU accelerator on machines without CUDA (instead of guessing with a warning),
    keep its compiled helpers in this environment's own cache (another checkout's cache would make it rebuild
    them on every command), build them with this environment's own ``ninja``, and silence the build chatter that
    is not ours to report.

    Why the ``ninja``: torch builds DeepSpeed's helpers with whichever ``ninja`` comes first on PATH. A shell with
    the environment activated (``scripts/*.sh``) finds the environment's ninja, a plain ``python train.py`` the
    system's; two ninja versions read each other's build log as out of date, so every switch between the two
    launch paths rebuilt the helpers (60-70 s on 2 cores)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
    scripts = sysconfig.get_path("scripts")
    path = os.environ.get("PATH", "")
    if os.path.isfile(os.path.join(scripts, "ninja")) and path.split(os.pathsep)[0] != scripts:
        os.environ["PATH"] = scripts + os.pathsep + path
    # "No CUDA runtime is found ..." on every CPU command, from torch.utils.cpp_extension when DeepSpeed imports it
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def setup_distributed() -> DistInfo:
    """Initialise the process group through DeepSpeed (launched by torchrun, the deepspeed launcher or plain python).

    A plain ``python train.py`` becomes a one-process group, so every code path is the distributed one.
    """
    prepare_accelerator_env()
    import deepspeed  # deferred: heavy, and it reads the accelerator environment set just above
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", str(free_port())))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        # DeepSpeed prints "DeepSpeed ... shm_comm_op built successfully" on every CPU command
        with contextlib.redirect_stdout(io.StringIO()):
            deepspeed.init_distributed(dist_backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def default_device() -> torch.device:
    """The first GPU when there is one (single-process tools), else the CPU."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few numbers over all processes."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor.tolist()


def average_buffers(module: torch.nn.Module) -> None:
    """Make the floating-point buffers (BatchNorm running mean and variance) of ``module`` the mean over all
    processes, in place: each process updated them with its own clips only. Integer buffers (batch counters) are
    the same everywhere and stay as they are."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1).double() for b in buffers])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for buffer in buffers:
        count = buffer.numel()
        buffer.copy_(flat[offset:offset + count].view_as(buffer).to(buffer.dtype))
        offset += count


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (one-process runs: ``[obj]``)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def cleanup() -> None:
    """Destroy the process group through DeepSpeed's comm layer, which also drops the groups it cached (after a
    plain ``torch.distributed.destroy_process_group`` a second training in the same process, e.g. a notebook,
    failed in ``deepspeed.initialize`` with "Group ... is not registered")."""
    if not dist.is_initialized():
        return
    import deepspeed.comm as ds_comm  # deferred: heavy, and only needed when DeepSpeed set the group up
    if ds_comm.is_initialized():
        ds_comm.destroy_process_group()
    else:
        dist.destroy_process_group()
