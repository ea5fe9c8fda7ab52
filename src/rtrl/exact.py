"""Exact RTRL for element-wise cells, one segment at a time, in chunks.

Notation (per stream, all ``(N,)`` vectors unless said): ``a_t = ∂c_t/∂c_{t-1}``,
``u^k_t = ∂c_t/∂p^k_t``, ``v^j_t = ∂c_t/∂θ^j``, ``g_t = ∂L/∂c_t`` through the readout only.
The sensitivities ``S_t = dc_t/dparams`` follow

    S^{W^k}_t = a_t ⊙ S^{W^k}_{t-1} + u^k_t ⊗ x_t      (N, D)
    S^{b^k}_t = a_t ⊙ S^{b^k}_{t-1} + u^k_t
    S^{θ^j}_t = a_t ⊙ S^{θ^j}_{t-1} + v^j_t

and the exact gradient of a segment's loss is ``Σ_t g_t ⊙ S_t``. Unrolling the recursion over the
segment ``1..T`` gives the same number from two cheap pieces:

    δ_t = g_t + a_{t+1} ⊙ δ_{t+1},  δ_{T+1} = 0                 (reverse scan: BPTT in the segment)
    ∇W^k = Σ_t (u^k_t ⊙ δ_t) ⊗ x_t  +  (a_1 ⊙ δ_1) ⊙ S^{W^k}_0   (truncated BPTT + carry-in)
    S^{W^k}_T = Λ_0 ⊙ S^{W^k}_0 + Σ_t (Λ_t ⊙ u^k_t) ⊗ x_t,  Λ_t = Π_{r=t+1..T} a_r   (carry-out)

A reset before step ``t`` zeroes ``c_{t-1}`` and ``S_{t-1}``; setting ``a_t = 0`` there cuts both
``δ`` and ``Λ``, so resets cost nothing extra. ``T = 1`` is classic fully online RTRL.

The input projections ``p = x Wᵀ + b`` stay in ordinary autograd: the function returns
``∂L/∂p = u ⊙ δ`` and autograd's own GEMM turns it into the within-segment ``∇W``, ``∇b`` and
``∇x``. ``W`` and ``b`` are passed in only so that the carry-in term lands in their ``.grad``.
The carry-out needs forward quantities only, so it is computed in the forward pass: backward is
the reverse scan plus the carry-in products.

Complex cells (state ``c`` complex, parameters and ``p`` real; see :mod:`rtrl.cells.base`): the
sensitivities are complex and the formulas above hold as written for the forward quantities.
For a real loss PyTorch's gradient of a complex tensor is ``g = ∂L/∂Re c + i ∂L/∂Im c``, so
the gradient of a real parameter with complex sensitivity ``S`` is ``Re(conj(g) ⊙ S)`` and the
reverse scan runs with ``conj(a)``: ``δ_t = g_t + conj(a_{t+1}) ⊙ δ_{t+1}``. On real tensors
``conj`` and ``Re`` are no-ops, so one code path serves both. For a cell with ``complex_input``
(its two gates are the parts of ``q = p_re + i p_im``), ``S^{W_im} = i S^{W_re}``, so only the
``re`` gate's sensitivities are carried, and with ``Z = Σ_b conj(e_b) ⊙ S_b``:
``∇W_re = Re Z``, ``∇W_im = Re(i Z) = −Im Z``.

``through_time=False`` is the "spatial" rule: ``c_{t-1}`` is a constant at every step, so
``δ_t = g_t`` (no scan), no carry terms and no gradient into ``c_0``.

What keeps it fast on a CPU (measured in docs/benchmarks.md): carry factors ``Λ`` flushed to 0
below ``tiny/eps²`` (:func:`_flush_floor`), so that no subnormal number reaches the GEMM; for a
linear time-invariant cell ``Λ`` as powers of one vector per unit; ``S_T`` written into a
recycled block (:mod:`rtrl.recycle`) by one product and one accumulating GEMM. What is left
beyond truncated BPTT is mostly that GEMM and two passes over the carried ``S^W``, one in each
direction: the floor of this algorithm, which ``benchmarks/rtrl_speed.py`` times alone.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from rtrl.cells.base import ElementwiseCell
from rtrl.recycle import recycler
from rtrl.state import RecurrentState, Sensitivities  # noqa: F401 (re-exported: rtrl.exact.RecurrentState)


def scan(
    cell: ElementwiseCell, p: Tensor, c0: Tensor, keep: Optional[Tensor], with_prev: bool = True
) -> tuple[Optional[Tensor], Tensor]:
    """Run the recurrence without gradients: ``p (T,B,K,N)``, ``c0 (B,N)``, ``keep (T,B)|None``.

    Returns ``c_prev (T,B,N)`` (the state each step saw, after resets; ``None`` unless
    ``with_prev``) and ``c (T,B,N)``. The states go into one ``(T+1, B, N)`` buffer, so that without
    resets ``c_prev`` and ``c`` are two views of it and nothing is copied after the loop.
    """
    T, B, _, N = p.shape
    theta = cell.weight_hh.detach()
    linear = cell.linear_terms(p, theta)  # (a, b) of c = a ⊙ c_prev + b, or None
    states = c0.new_empty(T + 1, B, N)
    states[0] = c0
    kept = c0.new_empty(T, B, N) if keep is not None and with_prev else None  # c_{t-1} ⊙ keep_t
    for t in range(T):
        c = states[t]
        if keep is not None:
            c = torch.mul(c, keep[t, :, None], out=None if kept is None else kept[t])
        if linear is None:
            states[t + 1] = cell.step(c, p[t], theta)
        else:
            torch.addcmul(linear[1][t], linear[0], c, out=states[t + 1])
    c_prev = states[:-1] if keep is None else kept
    return (c_prev if with_prev else None), states[1:]


def _flush_floor(dtype: torch.dtype) -> float:
    """Carry factors of magnitude below ``tiny / eps²`` of ``dtype`` are set to 0 (8e-25 in float32,
    5e-277 in float64). A product of many factors ``|a| < 1`` underflows through the subnormal
    numbers, which x86 CPUs handle in microcode, ~100x slower, and the carry-out GEMM reads every
    factor ``D`` times: at B = 32, N = 512, T = 100 it ran in 340 ms instead of 15 ms. A factor this
    small scales its term by less than ``10⁻²⁴`` (float32), far below rounding, and in float64 the
    floor is invisible. Flushing before each multiply keeps every product by an ``|a| ≥ eps²`` normal."""
    info = torch.finfo(dtype)
    return info.tiny / info.eps**2


def _flushed(z: Tensor, floor: float) -> Tensor:
    """``z`` with the real numbers (complex: each part) of magnitude below ``floor`` set to 0. One
    ``hardshrink``: a comparison, where ``abs`` of a complex subnormal would itself be slow."""
    if z.is_complex():
        return torch.view_as_complex(torch.hardshrink(torch.view_as_real(z), floor))
    return torch.hardshrink(z, floor)


def _shared(z: Tensor) -> Tensor:
    """``z (T, B, ...)`` without the dims it is only broadcast along (stride 0): ``(T|1, B|1, ...)``.

    A linear time-invariant cell's ``a`` and ``u`` are one vector for every step and stream."""
    for dim in (0, 1):
        if z.shape[dim] > 1 and z.stride(dim) == 0:
            z = z.narrow(dim, 0, 1)
    return z


def _carry_factors(a: Tensor, keep: Optional[Tensor], a_kept: Tensor) -> tuple[Tensor, Tensor]:
    """``Λ_t = Π_{r=t+1..T} keep_r a_r`` for ``t = 1..T`` and ``Λ_0``, flushed (:func:`_flush_floor`).

    ``a (T, B, N)`` without resets, ``keep (T, B)|None``, ``a_kept = keep ⊙ a``. Returns
    ``(T, B|1, N)`` and ``(B|1, N)``.
    When ``a`` is one vector for all steps and streams (a linear time-invariant cell: the LRU, the
    RTU, the diagonal RNN), ``Λ_t = a^{T-t}`` times ``Π_{r>t} keep_r``: the powers are computed once
    per unit, the resets once per stream, and without resets ``Λ`` is shared by all streams.
    Otherwise a reverse loop of small in-cache products (faster here than flip/cumprod/flip).
    """
    floor, T = _flush_floor(a.dtype), a.shape[0]
    if T == 1:  # fully online (one step a segment): Λ_1 = 1 and Λ_0 = keep_1 a_1, nothing to multiply out
        return torch.ones_like(_shared(a)), _flushed(_shared(a_kept)[0], floor)
    lti = _shared(a)
    if lti.shape[:2] == (1, 1):
        powers = _flushed(torch.cumprod(lti[0].expand(T, -1), 0), floor)  # a^1 .. a^T, (T, N)
        lam = torch.cat((powers[:-1].flip(0), torch.ones_like(powers[:1]))).unsqueeze(1)
        lam0 = powers[-1:]
        if keep is not None:
            kept = keep.flip(0).cumprod(0).flip(0)  # Π_{r≥t} keep_r, (T, B)
            lam = lam * torch.cat((kept[1:], torch.ones_like(kept[:1])))[:, :, None]
            lam0 = lam0 * kept[0][:, None]
        return lam, lam0
    lam = torch.empty_like(a_kept)
    lam[-1] = 1
    for t in range(T - 1, 0, -1):
        torch.mul(_flushed(lam[t], floor), a_kept[t], out=lam[t - 1])
    return lam, _flushed(lam[0], floor) * a_kept[0]


def _time_sum_of_products(a: Tensor, b: Tensor, chunk: int = 16) -> Tensor:
    """``Σ_t a_t ⊙ b_t`` over the first dim (broadcasting the rest), a few steps at a time so the
    product's temporary stays in cache (one multiply-and-sum over all ``T`` is ~30 % slower;
    einsum makes it a batched GEMM of tiny products, slower still)."""
    total = (a[:chunk] * b[:chunk]).sum(0)
    for t in range(chunk, a.shape[0], chunk):
        total += (a[t:t + chunk] * b[t:t + chunk]).sum(0)
    return total


def _real_pairs(z: Tensor) -> Tensor:
    """A complex tensor as real ``(..., 2)`` (re, im) pairs, without a copy; a real one as is."""
    return torch.view_as_real(z) if z.is_complex() else z


def _re_conj_mul(z: Tensor, w: Tensor) -> Tensor:
    """``Re(conj(z) ⊙ w)`` (broadcasting), computed in real arithmetic: ``z ⊙ w`` for real tensors."""
    if not (z.is_complex() or w.is_complex()):
        return z * w
    zr, wr = _real_pairs(z), _real_pairs(w)
    # two products on strided views: faster than one product and a sum over a last dim of 2
    return torch.addcmul(zr[..., 0] * wr[..., 0], zr[..., 1], wr[..., 1])


def _real_columns(z: Tensor) -> Tensor:
    """A complex ``(..., M)`` tensor as real ``(..., 2M)`` interleaved (re, im) columns, without a copy."""
    return torch.view_as_real(z).flatten(-2) if z.is_complex() else z


def _add_outer_sum_(out: Tensor, x: Tensor, z: Tensor) -> None:
    """``out[b] += Σ_t x_t[b] ⊗ z_t[b]``: ``out (B, D, M)``, ``x (T, B, D)`` real, ``z (T, B|1, M)``.

    Complex ``z`` (and ``out``) run as one real GEMM over interleaved (re, im) columns. A ``z``
    shared by all streams (``B = 1``) makes it one 2-D GEMM over ``B·D`` rows, faster than ``B``
    small ones. Accumulating into ``out`` (BLAS ``beta = 1``) reads it tile by tile inside the
    GEMM, which costs less than a separate pass over the result.
    """
    out_r, z_r = _real_columns(out), _real_columns(z)
    T, B, D = x.shape
    if z.shape[1] == 1:
        out_r.view(B * D, -1).addmm_(x.reshape(T, B * D).t(), z_r[:, 0])
    else:
        out_r.baddbmm_(x.permute(1, 2, 0), z_r.transpose(0, 1))


def _conj(a: Tensor) -> Tensor:
    """``conj(a)`` materialised, keeping a broadcast (stride-0) ``a`` broadcast."""
    shared = _shared(a)
    return shared.conj().resolve_conj().expand_as(a) if shared.shape != a.shape else a.conj().resolve_conj()


_CHUNK_BYTES = 1 << 19  # streams are summed a cache-sized group at a time (measured: 256-768 KB alike)


def _stream_groups(s: Tensor) -> range:
    """Start indices of groups of streams of ``s (B, ...)`` whose block fits ``_CHUNK_BYTES``: one
    stream at a time for the paper's sizes (1 MB a stream), dozens for small layers, where a
    Python step per stream would cost more than the arithmetic."""
    per_stream = s[0].numel() * s.element_size()
    return range(0, s.shape[0], max(1, _CHUNK_BYTES // max(per_stream, 1)))


def _weighted_stream_sum(s: Tensor, e: Tensor) -> Tensor:
    """``Σ_b s[b] ⊙ e[b]``: ``s (B, D, M)``, ``e (B, 1, M)`` -> ``(D, M)``, group by group of streams
    into one accumulator: one read of ``s`` and no temporary of its size (a whole multiply then a
    sum over streams was ~1.6x slower at the paper's sizes; a batched GEMM over units slower still)."""
    starts = _stream_groups(s)
    step = starts.step
    acc = (s[:step] * e[:step]).sum(0)
    for b in starts[1:]:
        acc += (s[b:b + step] * e[b:b + step]).sum(0)
    return acc


def _carry_in_grads(s_w: Tensor, s_b: Tensor, e: Tensor, K: int, complex_input: bool) -> tuple[Tensor, Tensor]:
    """The carry-in terms ``Σ_b Re(conj(e_b) ⊙ S_0[b])`` of ``∇weight_ih (K*N, D)`` and ``∇bias``.

    ``s_w (B, D, M)``, ``s_b (B, M)``, ``e = ∂L/∂c_0 (B, N)``. For a ``complex_input`` cell (only
    the ``re`` gate stored), ``Z = Σ_b conj(e_b) ⊙ S_0[b]`` and ``∇(W_re, W_im) = (Re Z, −Im Z)``.
    """
    if complex_input:
        e_bar = e.conj().unsqueeze(1)
        z = _weighted_stream_sum(s_w, e_bar)
        z_b = (s_b * e_bar.squeeze(1)).sum(0)
        return torch.cat((z.real, -z.imag), 1).t(), torch.cat((z_b.real, -z_b.imag))
    e = e.repeat(1, K)
    s_r, e_r = _real_pairs(s_w), _real_pairs(e)  # Re(conj(e) S) on real views
    acc = _weighted_stream_sum(s_r, e_r.unsqueeze(1))
    return (acc.sum(-1) if s_w.is_complex() else acc).t(), _re_conj_mul(e, s_b).sum(0)


class _ExactElementwise(torch.autograd.Function):
    """See the module docstring. Inputs after ``cell``:

    ``p (T,B,K,N)``, ``x (T,B,D)``, ``c0 (B,N)``, ``keep (T,B)|None``, ``theta (J,N)``,
    ``weight (K*N,D)``, ``bias (K*N,)``, ``s_w, s_b, s_theta`` (``Sensitivities`` fields, or all
    ``None`` for plain BPTT inside the segment), ``through_time`` (False: the spatial rule).
    Outputs ``c (T,B,N)`` and the carried-out sensitivities (non-differentiable; empty tensors
    when none were given).
    """

    @staticmethod
    def forward(ctx, cell, p, x, c0, keep, theta, weight, bias, s_w, s_b, s_theta, through_time):
        c_prev, c = scan(cell, p, c0, keep)
        a, u, v = cell.local_derivatives(c_prev, p, theta)
        a_kept = a if keep is None else a * keep[:, :, None]  # a reset before step t cuts δ and Λ there
        tracked = s_w is not None
        if tracked:
            lam, lam0 = _carry_factors(a, keep, a_kept)
            u_s = u[:, :, :1] if cell.complex_input else u  # the gates whose sensitivities are stored
            ks = u_s.shape[2]
            lu = (lam.unsqueeze(2) * _shared(u_s)).flatten(2)  # Λ_t ⊙ u_t, (T, B|1, ks*N)
            lam0_k = lam0.repeat(1, ks)
            # S_T = Λ_0 ⊙ S_0 + Σ_t (Λ_t ⊙ u_t) ⊗ x_t: the product into a recycled block, then one
            # GEMM accumulating into it (see rtrl.recycle for why the block is recycled).
            s_w_out = recycler(cell).empty(s_w.shape, s_w.dtype, s_w.device)
            torch.mul(s_w, lam0_k.unsqueeze(1), out=s_w_out)
            _add_outer_sum_(s_w_out, x, lu)
            s_b_out = torch.addcmul(lu.sum(0), s_b, lam0_k)
            s_theta_out = _time_sum_of_products(lam.unsqueeze(2), v).addcmul_(s_theta, lam0.unsqueeze(1))
        else:
            s_w_out = s_b_out = s_theta_out = p.new_empty(0)
        ctx.save_for_backward(a_kept, u, v, *((s_w, s_b, s_theta) if tracked else ()))
        ctx.tracked, ctx.through_time, ctx.complex_input = tracked, through_time, cell.complex_input
        ctx.set_materialize_grads(False)  # the sensitivities get no gradient: skip zero-filling them
        ctx.mark_non_differentiable(s_w_out, s_b_out, s_theta_out)
        return c, s_w_out, s_b_out, s_theta_out

    @staticmethod
    def backward(ctx, g, *_unused):
        if ctx.tracked:
            a, u, v, s_w, s_b, s_theta = ctx.saved_tensors
        else:
            a, u, v = ctx.saved_tensors
        T, K = u.shape[0], u.shape[2]
        if g is None:
            g = torch.zeros_like(a)
        carry_in = None
        if ctx.through_time:
            a_bar = _conj(a)  # the reverse scan of a complex-linear map runs with conj(a)
            delta = torch.empty_like(g)
            delta[T - 1] = g[T - 1]
            for t in range(T - 2, -1, -1):
                torch.addcmul(g[t], a_bar[t + 1], delta[t + 1], out=delta[t])
            carry_in = a_bar[0] * delta[0]  # ∂L/∂c_0
        else:
            delta = g  # spatial: c_{t-1} is a constant, so only the step's own output counts
        delta_k = delta.unsqueeze(2)
        grad_p = _re_conj_mul(u, delta_k)
        grad_theta = _re_conj_mul(v, delta_k).sum((0, 1))
        grad_w = grad_b = None
        if ctx.tracked:
            grad_w, grad_b = _carry_in_grads(s_w, s_b, carry_in, K, ctx.complex_input)
        if ctx.tracked:
            grad_theta = grad_theta + _re_conj_mul(carry_in.unsqueeze(1), s_theta).sum(0)
        return None, grad_p, None, carry_in, None, grad_theta, grad_w, grad_b, None, None, None, None


def exact_rtrl(
    cell: ElementwiseCell,
    x: Tensor,
    p: Tensor,
    c0: Tensor,
    keep: Optional[Tensor],
    sensitivities: Optional[Sensitivities],
    through_time: bool = True,
) -> tuple[Tensor, Optional[Sensitivities]]:
    """Run one segment of ``cell`` with exact gradients.

    Args:
        cell: the element-wise cell (its ``weight_ih``, ``bias``, ``weight_hh`` are used).
        x: ``(T, B, D)`` the segment's inputs (used for the sensitivity of ``weight_ih``).
        p: ``(T, B, K, N)`` input projections ``x @ weight_ihᵀ + bias``, computed by autograd.
        c0: ``(B, N)`` state before the segment.
        keep: ``(T, B)`` 0/1 in ``x``'s dtype, 0 where an episode starts (state zeroed before the
            step), or ``None`` for no resets.
        sensitivities: the carried RTRL state for ``c0``, or ``None`` for BPTT inside the segment
            (gradient flows into ``c0`` instead; the carry-in term is absent).
        through_time: ``False`` for the spatial rule (gradient through each step alone; needs
            ``sensitivities=None``; ``c0`` gets no gradient).

    Returns:
        ``c (T, B, N)`` with exact gradients on the cell's parameters once backpropagated, and the
        carried-out sensitivities for the next segment (``None`` if none were given).
    """
    if not through_time and sensitivities is not None:
        raise ValueError("the spatial rule (through_time=False) carries no sensitivities")
    s = sensitivities if sensitivities is not None else (None, None, None)
    c, s_w, s_b, s_theta = _ExactElementwise.apply(
        cell, p, x, c0, keep, cell.weight_hh, cell.weight_ih, cell.bias, *s, through_time
    )
    out = None if sensitivities is None else Sensitivities(s_w, s_b, s_theta)
    return c, out
