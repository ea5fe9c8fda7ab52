"""A real diagonal linear recurrent unit (a real-valued cousin of the LRU).

    λ = σ(ν),   γ = sqrt(1 − λ²)
    c_t = λ ⊙ c_{t-1} + γ ⊙ (W x_t + b)

The normalisation ``γ`` keeps the state's scale independent of how slow a unit is. It is here to
show what a second cell costs: two short functions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rtrl.cells.base import ElementwiseCell


class DiagonalLinearCell(ElementwiseCell):
    """``K = 1`` gate (the input), ``J = 1`` recurrent vector ``ν`` (decay ``λ = σ(ν)``).

    ``ν`` starts uniform in ``[min_logit, max_logit]`` so that units span fast and slow memories;
    ``W`` and ``b`` ~ N(0, 0.1) like the eLSTM.
    """

    num_gates = 1
    num_recurrent = 1

    def __init__(
        self, input_size: int, hidden_size: int, min_logit: float = 0.0, max_logit: float = 4.0
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.min_logit, self.max_logit = min_logit, max_logit
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.normal_(self.weight_ih, std=0.1)
        torch.nn.init.normal_(self.bias, std=0.1)
        torch.nn.init.uniform_(self.weight_hh, self.min_logit, self.max_logit)

    @staticmethod
    def _decay(nu: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``λ = σ(ν)``, ``1 − λ = σ(−ν)`` and ``γ = sqrt((1 − λ)(1 + λ))``, without the cancellation
        of ``1 − λ`` that loses a slow unit's digits in float32 (ν ≳ 8) and zeroes γ (ν ≳ 16)."""
        lam, rest = torch.sigmoid(nu), torch.sigmoid(-nu)
        return lam, rest, torch.sqrt(rest * (1 + lam))

    def linear_terms(self, p: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        lam, _, gamma = self._decay(theta[0])
        return lam, gamma * p[..., 0, :]

    def step(self, c_prev: Tensor, p: Tensor, theta: Tensor) -> Tensor:
        lam, b = self.linear_terms(p, theta)
        return torch.addcmul(b, lam, c_prev)

    def local_derivatives(
        self, c_prev: Tensor, p: Tensor, theta: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        lam, rest, gamma = self._decay(theta[0])
        dlam = lam * rest
        dgamma = -lam * dlam / gamma
        a = lam.expand_as(c_prev)
        u = gamma.expand_as(c_prev).unsqueeze(-2)
        v = (dlam * c_prev + dgamma * p[..., 0, :]).unsqueeze(-2)
        return a, u, v
