"""Device and process-group setup: one place that knows about "cpu", "cuda" and "npu" (Ascend).

The model code never names a device kind; the pipeline asks `init_from_env` for a `DistContext` and moves
tensors to `ctx.device`. Under torchrun every process finds RANK, WORLD_SIZE and LOCAL_RANK in its
environment; the device index is LOCAL_RANK (the process's slot on its own node), never the global rank,
so that several nodes work (the reference's `set_device(RANK)` does not).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from opensora_cli.errors import MissingDependencyError, UsageError

DEVICE_KINDS = ("cpu", "cuda", "npu")
NPU_HINT = "--device npu needs torch_npu: pip install 'opensora-cli[npu]' (Ascend CANN toolkit required)"


def _import_torch_npu():
    """Import torch_npu, which registers the "npu" device with torch; MissingDependencyError if absent."""
    try:
        return importlib.import_module("torch_npu")
    except ImportError as exc:
        raise MissingDependencyError(NPU_HINT) from exc


def _npu_available() -> bool:
    try:
        return _import_torch_npu().npu.is_available()
    except MissingDependencyError:
        return False


def resolve_device(name: str | None) -> torch.device:
    """The device this process runs on.

    Args:
        name: "cpu", "cuda", "npu", or None for the best available (cuda, then npu if torch_npu is installed,
            then cpu).

    Returns:
        `torch.device`; for cuda and npu under a launcher, indexed by LOCAL_RANK.

    Raises:
        UsageError: an unknown name, "cuda" without a visible GPU, or fewer devices than processes per node.
        MissingDependencyError: "npu" without torch_npu installed.
    """
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "npu" if _npu_available() else "cpu"
    if name not in DEVICE_KINDS:
        raise UsageError(f"--device must be one of {', '.join(DEVICE_KINDS)}, got {name!r}")
    if name == "cpu":
        return torch.device("cpu")

    if name == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "without CUDA"
            raise UsageError(f"--device cuda, but no CUDA GPU is visible (torch {torch.__version__} built {build}): "
                             "use --device cpu, or check CUDA_VISIBLE_DEVICES and the driver")
        count = torch.cuda.device_count()
    else:
        torch_npu = _import_torch_npu()
        if not torch_npu.npu.is_available():
            raise UsageError("--device npu, but no Ascend NPU is visible: use --device cpu, or check the CANN setup")
        count = torch_npu.npu.device_count()

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "LOCAL_RANK" not in os.environ:
        return torch.device(name)  # not one of several processes a launcher started
    local_rank = int(os.environ["LOCAL_RANK"])
    if local_rank >= count:
        raise UsageError(f"process {local_rank} on this node needs {name} device {local_rank}, but only {count} are "
                         f"visible: use at most --nproc {count} per node")
    return torch.device(name, local_rank)


def backend_for(device: torch.device | str) -> str:
    """The collective backend of a device kind: "nccl" (cuda), "hccl" (npu) or "gloo" (cpu).

    Args:
        device: a `torch.device` or a string such as "cuda:1" ("npu" strings parse without torch_npu).
    """
    kind = device.type if isinstance(device, torch.device) else device.split(":")[0]
    return {"cuda": "nccl", "npu": "hccl"}.get(kind, "gloo")


@dataclass
class DistContext:
    """Where this process stands: its rank among `world_size` processes, its device and process group.

    `group` is None for a single process; collectives are then skipped by the helpers that take a context.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    group: dist.ProcessGroup | None = None
    _owns_group: bool = field(default=False, repr=False)  # made by init_from_env: shutdown destroys it

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0


def init_from_env(device_name: str | None = None) -> DistContext:
    """Set up this process from the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK).

    Without them, or with WORLD_SIZE 1, there is no process group. An already initialised default group
    (accelerate, a test harness) is reused and left for its owner to destroy.

    Args:
        device_name: as `resolve_device`.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda" and device.index is not None:  # NCCL and default allocations use it
        torch.cuda.set_device(device)
    elif device.type == "npu" and device.index is not None:
        _import_torch_npu().npu.set_device(device)
    if world_size == 1:
        return DistContext(0, 1, 0, device)
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, dist.group.WORLD)
    # Imported first on purpose: torch._dynamo (which diffusers imports with the models) takes references to
    # an existing default group in its import-time tables, and a group referenced past `destroy_process_group`
    # keeps its threads until interpreter exit (see `shutdown`). Importing it before the group exists costs
    # nothing extra, as the models import it anyway.
    importlib.import_module("torch._dynamo")
    dist.init_process_group(backend_for(device), rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, device, dist.group.WORLD, _owns_group=True)


# Barrier works kept to the end of the process by `drain` (a few bytes each): see there.
_DRAINED: list = []


def drain(group: dist.ProcessGroup | None = None) -> None:
    """Wait until every rank is past its collectives and gloo's worker threads hold nothing that needs the GIL.

    Why: a gloo worker thread releases a finished work (and the tensors in it, whose Python objects need the
    GIL) under the group's lock, after the caller's `wait()` has returned. If the group is torn down then, the
    main thread (holding the GIL) waits for that lock while the worker waits for the GIL: a deadlock (seen when
    DDP's reducer freed the group), or, during interpreter exit, an abort. A barrier alone does not close the
    window: the worker's release of the work before it, and of the barrier itself, still follow its `wait()`.
    So two barriers, with the GIL released while waiting:
    - the second can only start once the worker that ran the first has released everything, since works are
      taken from the queue under the same lock; so after it, no earlier work is held by a worker;
    - the first barrier holds the works that were still in flight when it was queued; it is kept here until
      the process ends, so that no worker thread ever drops its last reference.

    Args:
        group: the group (None: the default group); a no-op without an initialised process group.
    """
    if not dist.is_initialized():
        return
    first = dist.barrier(group=group, async_op=True)
    first.wait()
    second = dist.barrier(group=group, async_op=True)
    second.wait()
    _DRAINED.extend((first, second))


def shutdown(ctx: DistContext, clean: bool = True) -> None:
    """Destroy the process group that `init_from_env` created (no-op otherwise), while Python is still alive.

    `destroy_process_group` alone does not stop gloo's worker threads while any Python object still refers to
    the group; they then die during interpreter finalisation, and one releasing a tensor then aborts the process
    (exit 134) after all the work was done. So: `drain` (when `clean`; see there), then drop every reference we
    hold (holders such as `SequenceParallelAttnProcessor` read the group through `ctx`) and destroy, then a
    garbage collection for reference cycles: the group's threads are joined before this returns, and a group
    someone still refers to is reported as a warning.

    Args:
        ctx: the context of this process.
        clean: False on an error path: a failed rank must not wait in a barrier for peers that are still busy
            (the launcher stops them).
    """
    if not (ctx._owns_group and dist.is_initialized()):
        return
    group = ctx.group
    try:
        if clean:
            drain(group)
    finally:
        alive = weakref.ref(group) if group is not None else None
        ctx.group = None
        ctx._owns_group = False
        del group
        dist.destroy_process_group()
        gc.collect()
        if alive is not None and alive() is not None:
            warnings.warn("the process group is still referenced after shutdown; its threads will stop at "
                          "interpreter exit, which can abort the process", RuntimeWarning, stacklevel=2)


@contextlib.contextmanager
def distributed_context(device_name: str | None = None) -> Iterator[DistContext]:
    """`init_from_env(device_name)` and a matching `shutdown`: clean (with a barrier) unless the body raised."""
    ctx = init_from_env(device_name)
    clean = False
    try:
        yield ctx
        clean = True
    finally:
        shutdown(ctx, clean=clean)


# The dtype names of `--dtype` and `--mixed-precision` (accelerate's "no" is full precision).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """The `torch.dtype` of "fp32", "bf16" or "fp16" (or "no": fp32, as accelerate's mixed precision says it)."""
    return DTYPES["fp32" if name == "no" else name]
