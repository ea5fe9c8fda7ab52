"""Approximate RTRL for dense, fully recurrent networks: SnAp-1 and UORO, the usual baselines.

Same cells, parameters and API as :mod:`rtrl.dense` (whose notation this module uses), only the
carried sensitivity differs:

    m = SnAp1LSTM(input_size, hidden_size)          # or SnAp1RNN
    m = UOROLSTM(input_size, hidden_size)           # or UORORNN
    state = m.initial_state(batch_size)
    y, state = m(x, state, reset=None)              # x (T, B, D) -> y (T, B, N), y_t = h_t
    loss(y).backward()                              # .grad = this rule's gradient estimate

**The gradient.** As in :mod:`rtrl.dense`, a segment's gradient is plain BPTT inside the segment
plus the carry-in term ``(∂L/∂s_0) · J̃_0``, now with an approximate ``J̃_0 ≈ ds_0/dΘ``; the
approximation only enters through what came before the segment. With one step per segment this is
the fully online algorithm (its gradient for step ``t`` is ``g_t · (I_t + D_t J̃_{t-1})``, with
``D_t = ds_t/ds_{t-1}`` and ``I_t = ∂s_t/∂Θ``: the rule's ``g_t · J̃_t`` before its approximation of
the last step, so never worse). Everything follows from the cell's local derivatives
(``_local`` in :mod:`rtrl.dense`): per unit ``n``, ``U = ∂s_n/∂p_n`` ``(B, S, G, N)`` and the
direct state-to-state part ``C`` ``(B, S, S, N)``, so that ``D_t = U·R·(h part) + C`` and
``I_t = U ⊗ ξ_t`` (a parameter row of unit ``n`` reaches only unit ``n`` in one step).

**SnAp-1** (Menick et al., 2021) keeps only the entries of ``J`` that one step makes nonzero: the
parameters of unit ``n``'s gates (the rows ``k·N + n`` of ``Θ``, every column) reach unit ``n``'s
state ``s_n`` (``h_n``, and ``c_n`` for the LSTM). It stores ``(B, S, G·N, E)``, i.e. ``O(N·(D+N))``
per stream, and propagates it with the dynamics restricted to that pattern: the ``S × S`` block of
``D_t`` on unit ``n``, ``A_n = Σ_k U_{·k n} R_k[n, n] (h column) + C_n``. So
``J̃_t = A ⊙ J̃_{t-1} + U ⊗ ξ_t`` per unit: ``O(N·(D+N))`` work per step. For an element-wise
recurrence (every ``R_k`` diagonal) the pattern is exact, and so is SnAp-1.

**UORO** (Tallec & Ollivier, 2018) carries a rank-one estimate ``J̃ = ũ θ̃ᵀ``, ``ũ (B, M)``,
``θ̃ (B, G·N, E)``. Each step draws random signs ``ν ∈ {±1}^M`` per stream and sets

    ũ_t = ρ_0 D_t ũ_{t-1} + ρ_1 ν,      θ̃_t = θ̃_{t-1} / ρ_0 + (νᵀ I_t) / ρ_1

with ``ρ_0 = √((‖θ̃_{t-1}‖ + ε) / (‖D_t ũ_{t-1}‖ + ε))`` and ``ρ_1 = √((‖νᵀ I_t‖ + ε) / (‖ν‖ + ε))``
(per stream: they balance the two factors' norms and so minimise the variance). Since
``E[ν νᵀ] = 1`` and the cross terms are odd in ``ν`` (the ``ρ`` are even in it),
``E[ũ_t θ̃_tᵀ] = D_t E[ũ_{t-1} θ̃_{t-1}ᵀ] + I_t = J_t``: the gradient is unbiased at fixed weights.
``D_t ũ`` is a forward-mode product, ``νᵀ I_t = (ν · U) ⊗ ξ_t``: ``O(N·(D+N))`` per step, dominated by
one ``N × G·N`` matrix-vector product. The signs come from ``generator`` (the global RNG if None).

Reset semantics are those of :mod:`rtrl.nn`: ``reset[t, b]`` zeroes the state and the
sensitivities (``J̃``, or ``ũ`` and ``θ̃``) of stream ``b`` before step ``t``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

from rtrl.dense import DenseRTRLLSTM, DenseRTRLRNN, _DenseRTRL

__all__ = ["SnAp1RNN", "SnAp1LSTM", "UORORNN", "UOROLSTM", "SnApSensitivities", "UOROSensitivities"]


class SnApSensitivities(NamedTuple):
    """``state`` ``(B, S, G·N, E)``: ``state[b, j, k·N + n, e] ≈ ∂s^j_n/∂Θ[k·N + n, e]`` (``s^0 = h``,
    ``s^1 = c``), the only entries SnAp-1 keeps."""

    state: Tensor

    def map(self, fn: Callable[[Tensor], Tensor]) -> "SnApSensitivities":
        return SnApSensitivities(fn(self.state))


class UOROSensitivities(NamedTuple):
    """``u`` ``(B, M)`` and ``theta`` ``(B, G·N, E)``: ``ds/dΘ ≈ u θᵀ`` per stream, unbiased."""

    u: Tensor
    theta: Tensor

    def map(self, fn: Callable[[Tensor], Tensor]) -> "UOROSensitivities":
        return UOROSensitivities(fn(self.u), fn(self.theta))


def _recurrent_diagonals(module: _DenseRTRL) -> Tensor:
    """``R_k[n, n]`` for every gate ``k``: ``(G, N)``."""
    n = module.hidden_size
    return module.weight_hh.detach().view(module.num_gates, n, n).diagonal(dim1=1, dim2=2)


class _SnAp1(_DenseRTRL):
    """The SnAp-1 rule, mixed into a dense cell (see the module docstring)."""

    rule = "SnAp-1"
    _sensitivity_type = SnApSensitivities

    @property
    def sensitivity_shape(self) -> tuple[int, int, int]:
        """``(S, G·N, E)``: one stream's sparse sensitivity (``O(N·(D+N))`` numbers)."""
        return (self.state_factor, self.num_gates * self.hidden_size, self.input_size + self.hidden_size + 1)

    def _advance(self, sens: SnApSensitivities, s_prev: Tensor, gates: tuple[Tensor, ...],
                 xi: Tensor) -> SnApSensitivities:
        u, cc = self._local(s_prev, gates)  # (B, S, G, N), (B, S, S, N)
        b, s, g, n = u.shape
        block = cc.clone()  # A: ds_t/ds_{t-1} on each unit's own state, (B, S, S, N)
        block[:, :, 0] += (u * _recurrent_diagonals(self)).sum(2)  # through R_k[n, n] h_{t-1, n}
        old = sens.state.view(b, s, g, n, -1)
        new = u[..., None] * xi[:, None, None, None, :]  # the immediate term U ⊗ ξ_t, (B, S, G, N, E)
        for j in range(s):
            for i in range(s):  # S ≤ 2: a few fused multiply-adds beat an einsum here
                new[:, j].addcmul_(old[:, i], block[:, j, i, None, :, None])
        return SnApSensitivities(new.view(b, s, g * n, -1))

    @staticmethod
    def _contract(grad_s0: Tensor, sens: Tensor) -> Tensor:
        """``Σ_{b,j} ∂L/∂s^j_{0,n} · J̃[b, j, k·N + n]``: the carry-in, ``(G·N, E)``."""
        b, s, rows, e = sens.shape
        n = grad_s0.shape[1] // s
        # a broadcast product and one sum: ~7x faster than the same einsum on CPU (measured, N=64)
        out = (sens.view(b * s, rows // n, n, e) * grad_s0.view(b * s, 1, n, 1)).sum(0)
        return out.reshape(rows, e)


class _UORO(_DenseRTRL):
    """The UORO rule, mixed into a dense cell (see the module docstring)."""

    rule = "UORO"
    _sensitivity_type = UOROSensitivities

    def __init__(self, input_size: int, hidden_size: int, generator: Optional[torch.Generator] = None,
                 eps: float = 1e-7) -> None:
        super().__init__(input_size, hidden_size)
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.generator = generator
        self.eps = eps

    @property
    def _sensitivity_shapes(self) -> list[tuple[int, ...]]:
        rows, cols = self.num_gates * self.hidden_size, self.input_size + self.hidden_size + 1
        return [(self.state_size,), (rows, cols)]

    def _advance(self, sens: UOROSensitivities, s_prev: Tensor, gates: tuple[Tensor, ...],
                 xi: Tensor) -> UOROSensitivities:
        u, cc = self._local(s_prev, gates)  # (B, S, G, N), (B, S, S, N)
        b, s, g, n = u.shape
        u_prev = sens.u.view(b, s, n)
        # forward-mode D_t ũ: through the pre-activations (R h-part), then the direct paths C
        dp = (u_prev[:, 0] @ self.weight_hh.detach().t()).view(b, 1, g, n)
        du = (u * dp).sum(2) + (cc * u_prev[:, None]).sum(2)  # (B, S, N)
        nu = torch.empty_like(u_prev).bernoulli_(0.5, generator=self.generator).mul_(2).sub_(1)
        w = (nu[:, :, None] * u).sum(1).view(b, g * n)  # νᵀ I_t = w ⊗ ξ_t
        eps = self.eps
        rho0 = ((sens.theta.flatten(1).norm(dim=1) + eps) / (du.flatten(1).norm(dim=1) + eps)).sqrt()
        rho1 = ((w.norm(dim=1) * xi.norm(dim=1) + eps) / ((s * n) ** 0.5 + eps)).sqrt()
        new_u = du.view(b, s * n) * rho0[:, None] + nu.view(b, s * n) * rho1[:, None]
        new_theta = sens.theta / rho0[:, None, None] + (w / rho1[:, None])[:, :, None] * xi[:, None, :]
        return UOROSensitivities(new_u, new_theta)

    @staticmethod
    def _contract(grad_s0: Tensor, u: Tensor, theta: Tensor) -> Tensor:
        """``Σ_b (∂L/∂s_0 · ũ_b) θ̃_b``: the carry-in, ``(G·N, E)``."""
        b, rows, e = theta.shape
        return ((grad_s0 * u).sum(1) @ theta.reshape(b, rows * e)).view(rows, e)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, eps={self.eps}"


class SnAp1RNN(_SnAp1, DenseRTRLRNN):
    """Tanh RNN (:class:`rtrl.dense.DenseRTRLRNN`) learning by SnAp-1: sensitivities ``(B, 1, N, D+N+1)``."""


class SnAp1LSTM(_SnAp1, DenseRTRLLSTM):
    """LSTM (:class:`rtrl.dense.DenseRTRLLSTM`, gates ``i, f, g, o``) learning by SnAp-1: each unit
    keeps ``∂h_n, ∂c_n`` by its own gates' rows, sensitivities ``(B, 2, 4N, D+N+1)``."""


class UORORNN(_UORO, DenseRTRLRNN):
    """Tanh RNN learning by UORO. Args: ``input_size``, ``hidden_size``, ``generator`` (for the
    random signs; default the global RNG), ``eps``. Sensitivities ``u (B, N)``, ``theta (B, N, D+N+1)``."""


class UOROLSTM(_UORO, DenseRTRLLSTM):
    """LSTM learning by UORO. Args as :class:`UORORNN`. Sensitivities ``u (B, 2N)`` (over
    ``[h; c]``), ``theta (B, 4N, D+N+1)``."""
