"""The exact count of bytes autograd keeps for backward: what the memory tables and the ablation report."""
from __future__ import annotations

from typing import Iterable

import torch


def storage_pointers(*modules: torch.nn.Module | None) -> set[int]:
    """The storages of the parameters and buffers of ``modules`` (None skipped): what a meter leaves out."""
    return {t.untyped_storage().data_ptr() for m in modules if m is not None for t in (*m.parameters(), *m.buffers())}


class SavedTensorMeter:
    """Bytes of the distinct storages autograd saves for backward inside :meth:`hooks`, each storage counted once
    at its full size (a view keeps its whole base alive); storages in ``exclude`` (parameters, buffers) are
    tallied apart in :attr:`excluded`. Subclasses override :meth:`on_new_storage` to describe what they see."""

    def __init__(self, exclude: Iterable[int] = ()):
        self.exclude = set(exclude)
        self.storages: dict[int, int] = {}
        self.excluded: dict[int, int] = {}

    @classmethod
    def excluding(cls, *modules: torch.nn.Module, **kwargs) -> "SavedTensorMeter":
        """A meter that leaves out the parameters and buffers of ``modules``."""
        return cls(storage_pointers(*modules), **kwargs)

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer in self.exclude:
            self.excluded[pointer] = storage.nbytes()
        elif pointer not in self.storages:
            self.storages[pointer] = storage.nbytes()
            self.on_new_storage(tensor, storage.nbytes())
        # detached: returning the tensor itself makes a reference cycle through its grad_fn that Python cannot
        # collect when the graph is never run backward (saved-bytes-only measurements leak every graph)
        return tensor.detach()

    def on_new_storage(self, tensor: torch.Tensor, nbytes: int) -> None:
        """Called once for each newly counted storage."""

    @staticmethod
    def unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    @property
    def bytes(self) -> int:
        return sum(self.storages.values())
