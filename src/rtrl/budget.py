"""Will it fit? A model's training memory estimated before anything is allocated, and refused with
the figure when it exceeds what the device has free (instead of a traceback from the allocator).

The model is built on PyTorch's ``meta`` device (shapes only, no storage), so the estimate costs
milliseconds at any size. It counts what training certainly holds and says "at least":

    parameters × (4 + weight_copies)   weights, gradients, two optimiser moments; actors' copies
    carried state × 3                  every stream's state and RTRL sensitivities, the copy a
                                       segment starts from, and the one it carries out

Activations, rollouts and the allocator's slack come on top.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in ``obj`` (a tensor, a module's parameters, nested tuples/lists/dicts
    or named tuples of tensors); meta tensors count as what they would hold."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, nn.Module):
        return sum(tensor_bytes(p) for p in obj.parameters())
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    fields = getattr(obj, "__dict__", None)  # a RecurrentState and the like
    return sum(tensor_bytes(v) for v in fields.values()) if isinstance(fields, dict) else 0


def available_bytes(device: torch.device) -> Optional[int]:
    """Memory free for a new run on ``device``: a CUDA device's free memory, or the CPU's
    ``MemAvailable`` (Linux; the physical memory elsewhere); ``None`` where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"


class _ShapesOnly(TorchFunctionMode):
    """Skips the in-place writes (the inits' ``normal_``, ``uniform_``, ``copy_``...) into meta tensors,
    whose values nobody reads: the first of them would load torch's meta kernels, 1.2 s of every
    run's start-up, for a size estimate."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        target = args[0] if args else kwargs.get("tensor")  # (torch.nn.init passes it by keyword)
        if name.endswith("_") and not name.endswith("__") and isinstance(target, Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


def training_bytes(build: Callable[[], nn.Module], state: Optional[Callable[[nn.Module], Any]] = None,
                   weight_copies: int = 0) -> float:
    """At least how many bytes training the model ``build()`` makes takes (see the module doc);
    ``state(model)``: every stream's carried state. ``inf`` for sizes too large to even count."""
    try:
        with torch.device("meta"), _ShapesOnly():
            model = build()
            carried = state(model) if state is not None else None
    except RuntimeError as e:  # e.g. "Storage size calculation overflowed": beyond any machine
        if "overflow" in str(e).lower():
            return float("inf")
        raise
    return tensor_bytes(model) * (4 + weight_copies) + 3 * tensor_bytes(carried)


def check_fits(need: float, device: torch.device, what: str, fix: str) -> None:
    """Raise ``ValueError`` naming ``what``, the estimate and the memory free on ``device`` if
    ``need`` bytes exceed it; ``fix`` says what to lower."""
    free = available_bytes(device)
    if free is None or need <= free:
        return
    figure = "more than any machine holds" if need == float("inf") else f"at least {fmt_bytes(need)}"
    where = "this machine" if device.type == "cpu" else str(device)
    raise ValueError(f"{what} needs {figure} of memory to train, but {where} has {fmt_bytes(free)} free: "
                     f"{fix}")
