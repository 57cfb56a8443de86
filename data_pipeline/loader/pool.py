"""Reuse batch tensors once nobody holds them any more.

A fresh 40 MB batch tensor costs its page faults on every batch (on this VM about as much as
copying the data). The pool hands a tensor out again only when no reference to it or to its
memory is left outside the pool: a consumer that keeps a batch (or a view or a numpy array of
it) simply causes a new allocation, never an overwrite.
"""
from __future__ import annotations

import sys

import torch

_use_count = getattr(torch._C, "_storage_Use_Count", None)


def shared_memory_reuse_available() -> bool:
    """Reuse needs torch's storage use count (a private but long-standing binding)."""
    return _use_count is not None


def storage_users(t: torch.Tensor) -> int:
    """Tensors (views included) sharing t's memory, t included."""
    storage = t.untyped_storage()
    return _use_count(storage._cdata) - 1  # minus the `storage` wrapper made here


class TensorPool:
    def __init__(self, per_shape: int):
        self.per_shape = per_shape if _use_count is not None else 0
        self._free: dict[tuple, list[torch.Tensor]] = {}

    @staticmethod
    def _unused(t: torch.Tensor) -> bool:
        # Python references: the pool's list, the caller's loop variable, this frame's
        # argument and getrefcount's own.
        return sys.getrefcount(t) <= 4 and storage_users(t) <= 1

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, bool]:
        """An uninitialised tensor, and whether it is new (False: a reused one, holding what
        its last user wrote)."""
        if not self.per_shape:
            return torch.empty(shape, dtype=dtype), True
        held = self._free.setdefault((shape, dtype), [])
        # A tensor sent to another process (DataLoader workers) was moved into shared memory
        # that the receiver reads: it is never ours to overwrite again.
        held[:] = [t for t in held if not t.is_shared()]
        for t in held:
            if self._unused(t):
                return t, False
        t = torch.empty(shape, dtype=dtype)
        if len(held) < self.per_shape:
            held.append(t)
        return t, True
