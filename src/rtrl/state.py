"""The state an element-wise layer carries between segments: the lowest floor of the package.

``RecurrentState(c, sensitivities)`` holds batch-first tensors, one row per stream; the
``Sensitivities`` are the RTRL state ``dc/dparams``. Nothing here imports the rest of ``rtrl``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor


class Sensitivities(NamedTuple):
    """``dc/dparams`` of one element-wise layer, one slot per stream (batch first).

    ``weight_ih`` ``(B, D, K*N)``: ``weight_ih[b, d, m] = ∂c[b, m mod N]/∂W[m, d]`` (stored
    transposed, the layout in which the carry-out GEMM runs fastest on CPU), ``bias``
    ``(B, K*N)``, ``weight_hh`` ``(B, J, N)``; complex for a complex cell. For a cell with
    ``complex_input`` only the ``re`` gate's columns are stored (``K*N/2``): the ``im`` gate's
    sensitivities are ``i`` times them.
    """

    weight_ih: Tensor
    bias: Tensor
    weight_hh: Tensor

    @staticmethod
    def zeros(cell: torch.nn.Module, batch_size: int, device=None, dtype=None) -> "Sensitivities":
        w = cell.weight_ih
        kw = dict(device=device or w.device, dtype=cell.state_dtype(dtype or w.dtype))
        kn, d = w.shape
        kn //= 2 if cell.complex_input else 1
        return Sensitivities(
            torch.zeros(batch_size, d, kn, **kw),
            torch.zeros(batch_size, kn, **kw),
            torch.zeros(batch_size, *cell.weight_hh.shape, **kw),
        )

    def map(self, fn: Callable[[Tensor], Tensor]) -> "Sensitivities":
        return Sensitivities(*(fn(s) for s in self))


class RecurrentState(NamedTuple):
    """What an element-wise layer carries between segments, batch first.

    ``c`` ``(B, N)``: the cell state (complex for a complex cell). ``sensitivities``: the RTRL state, or ``None`` for BPTT and
    for inference. Use ``map`` to move, detach, index or reorder streams:
    ``state.map(lambda t: t[idx])``.
    """

    c: Tensor
    sensitivities: Optional[Sensitivities] = None

    def map(self, fn: Callable[[Tensor], Tensor]) -> "RecurrentState":
        sens = None if self.sensitivities is None else self.sensitivities.map(fn)
        return RecurrentState(fn(self.c), sens)

    def detach(self) -> "RecurrentState":
        return self.map(Tensor.detach)

    @property
    def batch_size(self) -> int:
        return self.c.shape[0]
