"""Exact RTRL for two stacked element-wise layers: the reference behind the paper's Sec 5 limit.

A :class:`rtrl.nn.TwoLayer` stack (real cells; the bottom layer's readout the eLSTM output gate
``h = c¹ ⊙ σ(V [x; c¹] + e)``, or none) has three blocks of sensitivities per stream, the
``L(L+1)/2 = 3`` of the paper:

    S¹ = dc¹/dθ¹_cell   element-wise, as one layer: (K¹, N¹, D) + ...           O(N·D)
    S² = dc²/dθ²_cell   element-wise, the top layer reads h¹: (K², N², N¹) + ... O(N²)
    M  = dc²/dθ¹        dense: every top unit depends on every bottom parameter, O(N²·D + N³)
                        (θ¹ = the bottom cell's W, b, w and its output gate's V, e)

(``dc¹/dθ²`` is 0, and the top output gate's parameters reach no state.) Per step, with
``a, u, v`` the cells' local derivatives (:mod:`rtrl.cells.base`), ``R = ∂h¹/∂c¹`` (``N¹×N¹``,
dense through ``V``) and ``G[m, n] = Σ_k u²_k[m] W²_k[m, n]`` (how ``c²_t`` moves with ``h¹_t``):

    S¹_t = a¹_t ⊙ S¹_{t-1} + (u¹_t ⊗ x_t, u¹_t, v¹_t)
    M_t  = a²_t ⊙ M_{t-1} + G_t · dh¹_t/dθ¹,   dh¹_t/dθ¹ = R_t · S¹_t  (cell)  |  γ_t ⊗ [x_t; c¹_t]  (gate)
    S²_t = a²_t ⊙ S²_{t-1} + (u²_t ⊗ h¹_t, u²_t, v²_t)

Since ``S¹`` is element-wise, ``G R S¹`` is the product ``(G R)[m, n] · S¹[n, ...]``: one ``N²×N``
matrix product and an outer product per step, so a step costs ``O(N²·D)`` time, the size of
``M`` (the paper's quartic time is that of a dense ``dh¹/dθ¹``, from a third layer on). The
gradient of ``Σ_t ℓ_t(y_t)`` is, step by step, the readouts' own (autograd, with ``c¹_t``,
``c²_t`` held) plus ``∂ℓ_t/∂c¹_t · S¹_t + ∂ℓ_t/∂c²_t · (M_t, S²_t)``. A reset before step ``t``
zeroes both states and every sensitivity. This is a plain per-step loop, written for clarity
and for the cost study (``benchmarks/layers_cost.py``), not speed.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from rtrl.nn import ElementwiseRNN, TwoLayer
from rtrl.state import RecurrentState


class TwoLayerSensitivities(NamedTuple):
    """The three blocks of a 2-layer stack's sensitivities, batch first (natural layouts).

    ``own1 = (W (B,K¹,N¹,D), b (B,K¹,N¹), w (B,J¹,N¹))``: ``dc¹/dθ¹_cell``.
    ``dense = (W (B,N²,K¹,N¹,D), b (B,N²,K¹,N¹), w (B,N²,J¹,N¹), V (B,N²,N¹,D+N¹), e (B,N²,N¹))``:
    ``dc²/dθ¹`` (``V``, ``e`` empty without an output gate). ``own2``: ``dc²/dθ²_cell`` as ``own1``.
    """

    own1: tuple[Tensor, ...]
    dense: tuple[Tensor, ...]
    own2: tuple[Tensor, ...]

    def bytes_per_stream(self) -> dict[str, int]:
        """Bytes of each block for one stream."""
        size = lambda ts: sum(t[0].numel() * t.element_size() for t in ts)  # noqa: E731
        return {"own1": size(self.own1), "dense": size(self.dense), "own2": size(self.own2)}

    def map(self, fn: Callable[[Tensor], Tensor]) -> "TwoLayerSensitivities":
        return TwoLayerSensitivities(*(tuple(fn(t) for t in block) for block in self))


def _check(m: TwoLayer) -> None:
    for layer in (m.bottom, m.top):
        if type(layer)._readout is not ElementwiseRNN._readout or layer.cell.complex_state:
            raise ValueError("the exact 2-layer reference covers real cells with the output gate or no readout "
                             f"(ELSTM, DiagonalLinearRNN), not {type(layer).__name__}")


def zero_sensitivities(m: TwoLayer, batch_size: int, dtype=None, device=None) -> TwoLayerSensitivities:
    """Zero sensitivities of ``m`` for ``batch_size`` streams."""
    _check(m)
    w = m.bottom.cell.weight_ih
    kw = dict(dtype=dtype or w.dtype, device=device or w.device)
    z = lambda *shape: torch.zeros(batch_size, *shape, **kw)  # noqa: E731
    c1, c2 = m.bottom.cell, m.top.cell
    K1, J1, N1, D = c1.num_gates, c1.num_recurrent, c1.hidden_size, c1.input_size
    K2, J2, N2 = c2.num_gates, c2.num_recurrent, c2.hidden_size
    gate = m.bottom.output_gate is not None
    return TwoLayerSensitivities(
        (z(K1, N1, D), z(K1, N1), z(J1, N1)),
        (z(N2, K1, N1, D), z(N2, K1, N1), z(N2, J1, N1), z(N2, N1, D + N1) if gate else z(0), z(N2, N1) if gate else z(0)),
        (z(K2, N2, N1), z(K2, N2), z(J2, N2)),
    )


def _own_step(s: tuple[Tensor, ...], a: Tensor, u: Tensor, v: Tensor, x: Tensor) -> tuple[Tensor, ...]:
    """One layer's element-wise sensitivities, one step: ``a (B,N)``, ``u (B,K,N)``, ``v (B,J,N)``, ``x (B,D)``."""
    s_w, s_b, s_th = s
    a_ = a[:, None]
    return (a_[..., None] * s_w + u[..., None] * x[:, None, None, :], a_ * s_b + u, a_ * s_th + v)


def two_layer_rtrl(m: TwoLayer, x: Tensor, loss: Callable[[int, Tensor], Tensor], reset: Optional[Tensor] = None,
                   state: Optional[Tensor] = None, sens: Optional[TwoLayerSensitivities] = None,
                   ) -> tuple[Tensor, Tensor, TwoLayerSensitivities]:
    """Run ``m`` over ``x (T, B, D)`` by exact 2-layer RTRL, adding ``∇ Σ_t loss(t, y_t)`` to every
    parameter's ``.grad`` (as ``backward()`` would for full BPTT of both layers).

    ``loss(t, y_t)``: a scalar from the step's output ``y_t (B, N²)``. ``reset (T, B)`` bool,
    ``state = [c¹; c²] (B, N¹+N²)`` and ``sens`` carry on from an earlier call (zeros if ``None``).
    Returns ``y (T, B, N²)``, the final state and the sensitivities, all detached.
    """
    _check(m)
    T, B, D = x.shape
    bottom, top = m.bottom, m.top
    cell1, cell2 = bottom.cell, top.cell
    N1, K1, K2, N2 = cell1.hidden_size, cell1.num_gates, cell2.num_gates, cell2.hidden_size
    gate = bottom.output_gate
    if sens is None:
        sens = zero_sensitivities(m, B, x.dtype, x.device)
    c = state if state is not None else x.new_zeros(B, N1 + N2)
    c1, c2 = (t.detach() for t in c.split((N1, N2), -1))
    own1, dense, own2 = sens
    params = list(m.parameters())
    grads = [torch.zeros_like(p) for p in params]
    index = {id(p): i for i, p in enumerate(params)}

    def add(p: Tensor, g: Tensor) -> None:
        grads[index[id(p)]] += g.reshape(p.shape)

    W2 = cell2.weight_ih.detach().view(K2, N2, N1)
    ys = []
    with torch.no_grad():
        for t in range(T):
            if reset is not None:  # a new episode: both states and every sensitivity start from 0
                keep = (~reset[t]).to(x.dtype)
                c1, c2 = c1 * keep[:, None], c2 * keep[:, None]
                own1, dense, own2 = TwoLayerSensitivities(own1, dense, own2).map(
                    lambda s: s * keep.view(-1, *[1] * (s.dim() - 1)))
            xt = x[t]
            p1 = F.linear(xt, cell1.weight_ih, cell1.bias).unflatten(-1, (K1, N1))
            a1, u1, v1 = cell1.local_derivatives(c1, p1, cell1.weight_hh)
            c1 = cell1.step(c1, p1, cell1.weight_hh)
            own1 = _own_step(own1, a1, u1, v1, xt)
            if gate is not None:  # h¹ = c¹ ⊙ σ(o), o = V [x; c¹] + e
                xc = torch.cat((xt, c1), -1)
                s = torch.sigmoid(gate(xc))
                h1 = c1 * s
                gamma = c1 * s * (1 - s)  # ∂h¹/∂o
                R = torch.diag_embed(s) + gamma[:, :, None] * gate.weight[None, :, D:]  # ∂h¹/∂c¹
            else:
                h1, R = c1, None
            p2 = F.linear(h1, cell2.weight_ih, cell2.bias).unflatten(-1, (K2, N2))
            a2, u2, v2 = cell2.local_derivatives(c2, p2, cell2.weight_hh)
            c2 = cell2.step(c2, p2, cell2.weight_hh)
            G = torch.einsum("bkm,kmn->bmn", u2, W2)  # ∂c²_t/∂h¹_t
            A = G if R is None else G @ R  # ∂c²_t/∂c¹_t
            a = a2[:, :, None, None]
            m_w, m_b, m_th, m_v, m_e = dense
            m_w = a[..., None] * m_w + A[:, :, None, :, None] * own1[0][:, None]
            m_b = a * m_b + A[:, :, None, :] * own1[1][:, None]
            m_th = a * m_th + A[:, :, None, :] * own1[2][:, None]
            if gate is not None:
                Q = G * gamma[:, None, :]  # ∂c²_t/∂o_t
                m_v = a * m_v + Q[..., None] * xc[:, None, None, :]
                m_e = a2[:, :, None] * m_e + Q
            dense = (m_w, m_b, m_th, m_v, m_e)
            own2 = _own_step(own2, a2, u2, v2, h1)
            # the step's loss: its readouts' own gradient by autograd, with c¹_t, c²_t held
            with torch.enable_grad():
                c1_ = c1.clone().requires_grad_()
                c2_ = c2.clone().requires_grad_()
                y = top._readout(bottom._readout(xt, c1_), c2_)
                g = torch.autograd.grad(loss(t, y), [c1_, c2_] + params, allow_unused=True)
            ys.append(y.detach())
            for i, gi in enumerate(g[2:]):
                if gi is not None:
                    grads[i] += gi
            g1, g2 = g[0], g[1]
            add(cell1.weight_ih, torch.einsum("bn,bknd->knd", g1, own1[0]) + torch.einsum("bm,bmknd->knd", g2, m_w))
            add(cell1.bias, torch.einsum("bn,bkn->kn", g1, own1[1]) + torch.einsum("bm,bmkn->kn", g2, m_b))
            add(cell1.weight_hh, torch.einsum("bn,bjn->jn", g1, own1[2]) + torch.einsum("bm,bmjn->jn", g2, m_th))
            if gate is not None:
                add(gate.weight, torch.einsum("bm,bmnj->nj", g2, m_v))
                add(gate.bias, torch.einsum("bm,bmn->n", g2, m_e))
            add(cell2.weight_ih, torch.einsum("bm,bkmn->kmn", g2, own2[0]))
            add(cell2.bias, torch.einsum("bm,bkm->km", g2, own2[1]))
            add(cell2.weight_hh, torch.einsum("bm,bjm->jm", g2, own2[2]))
    for p, gp in zip(params, grads):
        p.grad = gp if p.grad is None else p.grad + gp
    return torch.stack(ys), torch.cat((c1, c2), -1), TwoLayerSensitivities(own1, dense, own2)
