"""The contract every element-wise recurrent cell follows.

An element-wise cell has a state ``c_t`` of ``N`` units, and unit ``n`` depends on the past only
through ``c_{t-1}[n]``. Its parameters come in three kinds:

* ``weight_ih`` ``(K*N, D)`` and ``bias`` ``(K*N,)``: the input projections of its ``K`` gates,
  ``p_t = weight_ih @ x_t + bias`` viewed as ``(K, N)``. They are ordinary autograd inputs of the
  exact RTRL function (their within-segment gradient is one GEMM).
* ``weight_hh`` ``(J, N)``: the per-unit recurrent parameters (e.g. the eLSTM's ``w_z, w_f``).

and the cell itself is two pure functions of tensors:

* ``step(c_prev, p, theta) -> c``: one step of the recurrence, ``(..., N)``.
* ``local_derivatives(c_prev, p, theta) -> (a, u, v)`` with ``a = ∂c/∂c_prev`` ``(..., N)``,
  ``u[k] = ∂c/∂p[k]`` ``(..., K, N)`` and ``v[j] = ∂c/∂theta[j]`` ``(..., J, N)``.

Both are element-wise, so they take any leading dimensions: the engine scans ``step`` over time
and calls ``local_derivatives`` once on the whole segment. Nothing else is needed to get exact
RTRL for a new cell (see :mod:`rtrl.exact` for the maths). A linear time-invariant cell (the
LRU, the RTU) may also define ``linear_terms``, so that the scan is one multiply-add per step.

Complex cells (``complex_state = True``, e.g. the LRU) keep ``p`` and every parameter real but
have a complex state ``c``: then ``a``, ``u``, ``v`` are complex, and ``step`` must be
holomorphic in ``c_prev`` (complex-linear in it, as for a diagonal linear recurrence) so that
``a`` is one complex number per unit. The engine takes conjugates where the maths needs them.
If moreover the input enters only as ``q = p[0] + i·p[1]`` (``complex_input = True``, ``K = 2``),
then ``u[1] = i·u[0]`` and so ``S^{W_im} = i·S^{W_re}``: the engine stores the sensitivities of the
``re`` gate only, half the memory and half the carry GEMM.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rtrl.checks import check_sizes

_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


class ElementwiseCell(nn.Module):
    """Base class: owns the parameters, subclasses define ``step`` and ``local_derivatives``.

    Subclasses set the class attributes ``num_gates`` (``K``) and ``num_recurrent`` (``J``).
    """

    num_gates: int = 1
    num_recurrent: int = 1
    complex_state: bool = False
    complex_input: bool = False

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        check_sizes(input_size, hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        k, j, n = self.num_gates, self.num_recurrent, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(k * n, input_size))
        self.bias = nn.Parameter(torch.empty(k * n))
        self.weight_hh = nn.Parameter(torch.empty(j, n))

    def state_dtype(self, dtype: torch.dtype | None = None) -> torch.dtype:
        """dtype of the state and sensitivities for parameters of ``dtype`` (default: the cell's):
        the same, or its complex counterpart for a complex cell."""
        dtype = dtype or self.weight_ih.dtype
        return _COMPLEX[dtype] if self.complex_state and not dtype.is_complex else dtype

    def step(self, c_prev: Tensor, p: Tensor, theta: Tensor) -> Tensor:
        """One step: ``c_prev (..., N)``, ``p (..., K, N)``, ``theta (J, N)`` -> ``c (..., N)``."""
        raise NotImplementedError

    def local_derivatives(
        self, c_prev: Tensor, p: Tensor, theta: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``a (..., N)``, ``u (..., K, N)``, ``v (..., J, N)``: partials of ``step`` (see module doc)."""
        raise NotImplementedError

    def linear_terms(self, p: Tensor, theta: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(a (N,), b (..., N))`` when ``step`` is the time-invariant linear map
        ``c = a ⊙ c_prev + b`` (``a`` one number per unit, ``b`` from the input ``p (..., K, N)``
        alone), else ``None``. Optional: the engine then computes ``b`` for the whole segment at
        once and scans with one multiply-add per step, instead of calling ``step`` ``T`` times."""
        return None

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"
