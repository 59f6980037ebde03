"""Memory accounting: the exact saved-for-backward meter (with a per-storage description for the breakdown tables)
and the peak resident set of this process on a CPU."""
from __future__ import annotations

import contextlib
import os
import re
import resource
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.nn.modules import module as module_mod

from side4video.engine.memory import SavedTensorMeter


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class HostPeak:
    """Peak resident set of this process since :meth:`reset` (``VmHWM`` after writing 5 to ``/proc/self/clear_refs``;
    else ``ru_maxrss``, the whole process's peak)."""

    def __init__(self) -> None:
        self.resettable = False

    def reset(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.resettable = True
        except OSError:
            self.resettable = False

    @staticmethod
    def current() -> int:
        kib = _proc_status_kib("VmRSS")
        if kib is None:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return kib * 1024

    def peak(self) -> int:
        kib = _proc_status_kib("VmHWM") if self.resettable else None
        if kib is None:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return kib * 1024

    @property
    def method(self) -> str:
        return "VmHWM (reset via /proc/self/clear_refs)" if self.resettable else "ru_maxrss (fresh process)"


class RecordingMeter(SavedTensorMeter):
    """The exact meter; with ``record``, each storage is also described by the op that created the tensor (its
    ``grad_fn``), its shape and dtype, the module it was saved in and the source lines that saved it — for finding
    where the bytes go."""

    def __init__(self, exclude: set[int], module_stack: list[str] | None = None, record: bool = False):
        super().__init__(exclude)
        self.records: dict[int, dict[str, Any]] = {}
        self.module_stack = module_stack
        self.record = record

    def on_new_storage(self, tensor: torch.Tensor, nbytes: int) -> None:
        if self.record:
            self.records[tensor.untyped_storage().data_ptr()] = self._describe(tensor, nbytes)

    def _describe(self, tensor: torch.Tensor, nbytes: int) -> dict[str, Any]:
        fn = tensor.grad_fn
        if fn is None:
            op = "leaf (requires grad)" if tensor.requires_grad else "input / no-grad tensor"
        else:
            op = type(fn).__name__
            if op == "ToCopyBackward0" and any(type(n).__name__ == "AccumulateGrad" for n, _ in fn.next_functions
                                               if n is not None):
                op = "autocast weight copy"
        module = self.module_stack[-1] if self.module_stack else ""
        return {"op": op, "shape": list(tensor.shape), "dtype": str(tensor.dtype).replace("torch.", ""),
                "bytes": nbytes, "module": module, "site": _call_site()}

    @contextlib.contextmanager
    def measuring(self, module_names: dict[int, str]) -> Iterator[None]:
        """The meter's hooks, with the running module tracked when it records (the step's ``measure``)."""
        stack = self.module_stack if self.module_stack is not None else []
        with module_tracking(module_names, stack) if self.record else contextlib.nullcontext(), self.hooks():
            yield


_METER_FILE = sys.modules[SavedTensorMeter.__module__].__file__


def _call_site(depth: int = 2) -> str:
    """The innermost ``depth`` frames outside torch and this meter: ``file:line function``."""
    frame = sys._getframe(2)
    sites = []
    torch_dir = os.sep + "torch" + os.sep
    while frame is not None and len(sites) < depth:
        name = frame.f_code.co_filename
        inside_meter = name == _METER_FILE or (name == __file__ and frame.f_code.co_name in ("on_new_storage",
                                                                                             "_describe"))
        if torch_dir not in name and not inside_meter:
            sites.append(f"{Path(name).name}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back
    return " <- ".join(sites)


@contextlib.contextmanager
def module_tracking(names: dict[int, str], stack: list[str]) -> Iterator[None]:
    """Keep ``stack[-1]`` = the qualified name of the module whose forward is running."""

    def pre(mod, args):
        stack.append(names.get(id(mod), type(mod).__name__))

    def post(mod, args, out):
        if stack:
            stack.pop()

    handles = [module_mod.register_module_forward_pre_hook(pre), module_mod.register_module_forward_hook(post)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def group_records(records: list[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    """Sum storages over blocks: module names with their block index replaced by ``*``."""
    groups: dict[tuple, dict[str, Any]] = {}
    for rec in records:
        module = re.sub(r"\.\d+(?=\.|$)", ".*", rec["module"])
        site = rec["site"]
        key = (module, rec["op"], tuple(rec["shape"]), rec["dtype"], site)
        entry = groups.setdefault(key, {"module": module, "op": rec["op"], "shape": rec["shape"],
                                        "dtype": rec["dtype"], "site": site, "count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += rec["bytes"]
    return sorted(groups.values(), key=lambda e: -e["bytes"])[:top]
