"""The paper's element-wise LSTM (eLSTM, ``QuasiLSTM`` in its code).

    z_t = tanh(Wz x_t + wz ⊙ c_{t-1} + bz)
    f_t = σ(Wf x_t + wf ⊙ c_{t-1} + bf)
    c_t = f_t ⊙ c_{t-1} + (1 − f_t) ⊙ z_t

Gates are ordered ``(z, f)`` in ``weight_ih``/``bias`` and ``(wz, wf)`` in ``weight_hh``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rtrl.cells.base import ElementwiseCell


class ELSTMCell(ElementwiseCell):
    """eLSTM recurrence; ``K = 2`` gates ``(z, f)``, ``J = 2`` recurrent vectors ``(wz, wf)``.

    Initialisation as the paper's code: every weight and bias ~ N(0, 0.1), plus an optional
    constant ``forget_bias`` added to ``bf`` (0 in the paper).
    """

    num_gates = 2
    num_recurrent = 2

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 0.0) -> None:
        super().__init__(input_size, hidden_size)
        if not math.isfinite(forget_bias):  # it would make every forget gate NaN
            raise ValueError(f"forget_bias must be a finite number, got {forget_bias}")
        self.forget_bias = forget_bias
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.weight_ih, self.bias, self.weight_hh):
            torch.nn.init.normal_(p, mean=0.0, std=0.1)
        with torch.no_grad():
            self.bias[self.hidden_size :] += self.forget_bias

    def _gates(self, c_prev: Tensor, p: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        z = torch.tanh(torch.addcmul(p[..., 0, :], theta[0], c_prev))
        f = torch.sigmoid(torch.addcmul(p[..., 1, :], theta[1], c_prev))
        return z, f

    def step(self, c_prev: Tensor, p: Tensor, theta: Tensor) -> Tensor:
        z, f = self._gates(c_prev, p, theta)
        return torch.lerp(z, c_prev, f)  # f ⊙ c_prev + (1 − f) ⊙ z

    def local_derivatives(
        self, c_prev: Tensor, p: Tensor, theta: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        z, f = self._gates(c_prev, p, theta)
        u_z = (1 - f) * (1 - z * z)
        u_f = (c_prev - z) * f * (1 - f)
        u = torch.stack((u_z, u_f), dim=-2)
        # a = f + wz·u_z + wf·u_f: the path through both gates counts (the submission's Eq. 8
        # drops the z term; the official code keeps it, and so do we).
        a = f + theta[0] * u_z + theta[1] * u_f
        v = u * c_prev.unsqueeze(-2)  # the gates see wz ⊙ c_prev, wf ⊙ c_prev
        return a, u, v
