"""Small process-level helpers shared by the command-line tools and benchmarks."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_cpu_allocator(threshold_bytes: int = 1 << 30) -> bool:
    """Let glibc reuse freed heap memory for large CPU tensors instead of mapping fresh pages.

    By default glibc serves every large block with a new ``mmap`` and returns it on free, so each
    segment's big tensors (RTRL's ``(B, D, K*N)`` sensitivities are 33 MB at the paper's sizes)
    pay one page fault per 4 KiB page on first touch: about 15 ms per 33 MB on our 2-core
    machines. Raising the mmap and trim thresholds keeps that memory in the heap for reuse. The
    cost: the process keeps its peak heap. Process-wide; a no-op (returns False) off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes)) and bool(
            libc.mallopt(_M_TRIM_THRESHOLD, 2 * threshold_bytes - 1)
        )
    except (OSError, AttributeError):
        return False


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when present, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.

    Raises ``ValueError`` naming the fix for an unknown name or a CUDA device that is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: this PyTorch sees no CUDA device (torch {torch.__version__}, "
                             f"built with CUDA {torch.version.cuda}); use --device cpu or auto")
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ValueError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices (cuda:0 .. "
                             f"cuda:{torch.cuda.device_count() - 1})")
        return torch.device(name)
    raise ValueError(f"unknown device {name!r}; choose one of {DEVICES} (or cuda:<index>)")


def copy_weights_(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    """Copy ``src``'s parameters and buffers into ``dst`` in place, across devices (e.g. a learner's
    CUDA weights into an actor's CPU copy): no new tensors, so shared memory stays shared."""
    with torch.no_grad():
        for d, s in zip(dst.parameters(), src.parameters()):
            d.copy_(s)
        for d, s in zip(dst.buffers(), src.buffers()):
            d.copy_(s)


class ProgressBar:
    """A tqdm bar (``enabled=False``: silence) whose postfix shows the latest statistics."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, unit: str = "it") -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit=unit, unit_scale=True, dynamic_ncols=True)

    def update(self, n: int, **stats) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in stats.items()},
                                 refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
