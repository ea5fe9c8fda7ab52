"""The Linear Recurrent Unit's recurrence (Orvieto et al. 2023), complex and diagonal.

    λ = exp(−exp(ν) + i·exp(θ_log))             (|λ| = exp(−exp(ν)) < 1 for any ν)
    γ = sqrt(1 − |λ|²)
    c_t = λ ⊙ c_{t-1} + γ ⊙ (p_re + i·p_im),   p = W x_t + b

Representation: ``p`` stays real, the complex input projection ``B x`` being two real gates
``(re, im)`` in ``weight_ih`` (``K = 2``); the state ``c`` is complex, so are ``a = λ``,
``u = (γ, iγ)`` and ``v``. ``weight_hh`` holds ``(ν, θ_log)`` (``J = 2``).

``γ`` is computed from ``ν`` (a fixed normalisation, differentiated exactly through ``ν``); the
paper's code instead trains ``log γ`` as a third parameter initialised to this value. The
readout ``Re(C c) + D x`` lives in :class:`rtrl.nn.LRU`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rtrl.cells.base import ElementwiseCell


def ring_init_(weight_hh: Tensor, r_min: float, r_max: float, max_phase: float) -> None:
    """Fill ``weight_hh[0] = ν``, ``weight_hh[1] = θ_log`` so that ``λ`` lies uniformly (by area) on
    the ring ``r_min ≤ |λ| ≤ r_max`` with phase uniform in ``[0, max_phase]``, as the paper's init."""
    if weight_hh.is_meta:  # shapes only (rtrl.budget sizes a run so): no values, and no 1-2 s of loading
        return  # torch's meta kernels for the arithmetic below
    with torch.no_grad():
        r2 = torch.empty_like(weight_hh[0]).uniform_(r_min**2, r_max**2)
        # |λ|² = exp(−2 exp(ν)); the clamp keeps ν finite when r2 hits 0 or 1 exactly (in the
        # parameters' dtype: 1 − 1e-12 is 1.0 in float32)
        info = torch.finfo(r2.dtype)
        r2 = r2.clamp(info.tiny, 1 - info.eps)
        weight_hh[0].copy_(torch.log(-0.5 * torch.log(r2)))
        phase = torch.empty_like(weight_hh[1]).uniform_(0, max_phase).clamp_min(1e-12)
        weight_hh[1].copy_(torch.log(phase))


class LRUCell(ElementwiseCell):
    """LRU recurrence; ``K = 2`` gates ``(re, im)``, ``J = 2`` parameters ``(ν, θ_log)``.

    Init as the paper: ring init of ``λ`` (defaults ``r_min = 0``, ``r_max = 1``,
    ``max_phase = 2π``), input weights ~ N(0, 1/(2D)) for both parts, bias 0.
    """

    num_gates = 2
    num_recurrent = 2
    complex_state = True
    complex_input = True  # c depends on p only through q = p_re + i p_im
    normalise = True  # multiply the input by γ; the RTU (a subclass) does not

    def __init__(self, input_size: int, hidden_size: int, r_min: float = 0.0, r_max: float = 1.0,
                 max_phase: float = 2 * math.pi) -> None:
        super().__init__(input_size, hidden_size)
        if not 0 <= r_min <= r_max <= 1:
            raise ValueError(f"need 0 <= r_min <= r_max <= 1, got r_min={r_min}, r_max={r_max}")
        self.r_min, self.r_max, self.max_phase = r_min, r_max, max_phase
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.normal_(self.weight_ih, std=1 / math.sqrt(2 * self.input_size))
        torch.nn.init.zeros_(self.bias)
        ring_init_(self.weight_hh, self.r_min, self.r_max, self.max_phase)

    def _decay(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """``λ``, ``exp(ν)``, ``exp(θ_log)`` and ``γ`` (``None`` without normalisation), all ``(N,)``."""
        e_nu, phase = torch.exp(theta[0]), torch.exp(theta[1])
        lam = torch.polar(torch.exp(-e_nu), phase)
        # γ = sqrt(1 − |λ|²) = sqrt(1 − exp(−2 e^ν)), by expm1: accurate for |λ| near 1
        gamma = torch.sqrt(-torch.expm1(-2 * e_nu)) if self.normalise else None
        return lam, e_nu, phase, gamma

    def linear_terms(self, p: Tensor, theta: Tensor) -> tuple[Tensor, Tensor]:
        lam, _, _, gamma = self._decay(theta)
        q = torch.complex(p[..., 0, :], p[..., 1, :])
        return lam, (q if gamma is None else gamma * q)

    def step(self, c_prev: Tensor, p: Tensor, theta: Tensor) -> Tensor:
        lam, b = self.linear_terms(p, theta)
        return torch.addcmul(b, lam, c_prev)

    def local_derivatives(
        self, c_prev: Tensor, p: Tensor, theta: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        lam, e_nu, phase, gamma = self._decay(theta)
        a = lam.expand_as(c_prev)
        scale = torch.ones_like(e_nu) if gamma is None else gamma
        u = torch.stack((torch.complex(scale, torch.zeros_like(scale)),
                         torch.complex(torch.zeros_like(scale), scale)), -2).expand(*c_prev.shape[:-1], 2, -1)
        # ∂λ/∂ν = −exp(ν) λ and ∂λ/∂θ_log = i exp(θ_log) λ, each times c_prev: one broadcast product
        dlam = torch.stack((-e_nu * lam, lam * torch.complex(torch.zeros_like(phase), phase)))  # (2, N)
        v = c_prev.unsqueeze(-2) * dlam
        if gamma is not None:  # γ(ν) scales the input too: dγ/dν = |λ|² exp(ν) / γ
            q = torch.complex(p[..., 0, :], p[..., 1, :])
            v[..., 0, :] += (torch.exp(-2 * e_nu) * e_nu / gamma) * q
        return a, u, v
