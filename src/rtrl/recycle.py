"""Reuse the memory of large output tensors once nothing references them any more.

Exact RTRL hands every segment a new carried-out sensitivity tensor ``S_T`` (33 MB for an eLSTM at
B = 32, N = 512, D = 257). With glibc's default settings such a block is a fresh ``mmap`` each
time, and filling it costs one page fault per 4 KiB page: ~5 ms per segment on our 2-core CPU,
as much as the rest of what RTRL adds to truncated BPTT besides its GEMM. A user's loop
``y, state = m(x, state); loss.backward()`` frees the previous segment's ``S_0`` (held by the
graph until ``backward``) just before the next segment needs an ``S_T`` of the same size, so a
cell keeps a few of the blocks it handed out and reuses one when its storage's reference count
says that only the recycler still holds it: no view, no saved tensor, no state of the user's.

Only on the CPU (CUDA's caching allocator already reuses blocks). A process-wide alternative is
:func:`rtrl.utils.tune_cpu_allocator`; this needs no setting and touches nothing but our own blocks.
"""

from __future__ import annotations

import threading
import weakref

import torch
from torch import Tensor


# How many holders a storage has (tensors and views on it, saved tensors, our own reference). A
# private PyTorch function: without it (another PyTorch version) blocks are simply not recycled.
_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _use_count(storage: torch.UntypedStorage) -> int:
    return _storage_use_count(storage._cdata)


class Recycler:
    """Keeps up to ``capacity`` storages it allocated and hands out the free ones again."""

    def __init__(self, capacity: int = 3) -> None:
        self.capacity = capacity
        self.storages: list[torch.UntypedStorage] = []
        self.lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
        """An uninitialised contiguous tensor, in a recycled block when one is free."""
        if device.type != "cpu" or _storage_use_count is None:
            return torch.empty(shape, dtype=dtype, device=device)
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        with self.lock:  # two threads must not take the same free block
            free = [i for i, s in enumerate(self.storages) if _use_count(s) == 1]
            for i in free:
                if self.storages[i].nbytes() == nbytes:
                    return torch.empty(0, dtype=dtype, device=device).set_(self.storages[i], 0, shape)
            out = torch.empty(shape, dtype=dtype, device=device)
            if len(self.storages) >= self.capacity and free:  # a free block of another size: let it go
                del self.storages[free[0]]
            if len(self.storages) < self.capacity:
                self.storages.append(out.untyped_storage())
            return out


_RECYCLERS: weakref.WeakKeyDictionary[object, Recycler] = weakref.WeakKeyDictionary()


def recycler(owner: object) -> Recycler:
    """The recycler of ``owner`` (e.g. a cell), created on first use; it lives as long as the owner
    and is invisible to ``state_dict``, ``deepcopy`` and pickling."""
    r = _RECYCLERS.get(owner)
    if r is None:
        r = _RECYCLERS[owner] = Recycler()
    return r
