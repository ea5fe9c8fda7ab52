"""Independent references the exact engine is checked against (kept out of the library).

* ``bptt_gradients``: plain autograd through ``cell.step`` over the whole, unsegmented sequence.
* ``per_step_rtrl``: the textbook RTRL loop, one sensitivity update per step, as the paper's
  code does it.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def rel_err(a: Tensor, b: Tensor) -> float:
    """``max|a − b| / max|b|``: the error measure of every exactness test."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def random_sequence(T: int, B: int, D: int, N: int, boundary: int):
    """Inputs ``x (T, B, D)``, random resets (one exactly at segment ``boundary``, one at step 0)
    and a loss on every step, nonlinear in ``y``: ``loss_fn(y, t0)`` for a segment starting at ``t0``."""
    x = torch.randn(T, B, D, dtype=torch.float64)
    reset = torch.rand(T, B) < 0.1
    reset[boundary, 0] = True
    reset[0, 1] = True
    target = torch.randn(T, B, N, dtype=torch.float64)

    def loss_fn(y: Tensor, t0: int) -> Tensor:
        tgt = target[t0 : t0 + y.shape[0]]
        return ((y - tgt) ** 2).sum() + (y**3).sum()

    return x, reset, loss_fn


def project(module, x: Tensor) -> Tensor:
    cell = module.cell
    return F.linear(x, cell.weight_ih, cell.bias).unflatten(-1, (cell.num_gates, cell.hidden_size))


def unrolled_states(module, x: Tensor, reset: Optional[Tensor], c0: Tensor, spatial: bool = False) -> Tensor:
    """``c (T, B, N)`` by autograd through ``cell.step``, resets (if any) applied before each step.

    ``spatial``: detach the previous state at every step (no credit through time)."""
    cell, p = module.cell, project(module, x)
    c, out = c0, []
    for t in range(x.shape[0]):
        if spatial:
            c = c.detach()
        if reset is not None:
            c = c * (~reset[t]).to(x.dtype)[:, None]
        c = cell.step(c, p[t], cell.weight_hh)
        out.append(c)
    return torch.stack(out)


def bptt_gradients(module, x: Tensor, reset: Optional[Tensor], loss_fn, spatial: bool = False) -> dict[str, Tensor]:
    """Gradients of ``loss_fn(y, t0)`` summed over the whole sequence, by full BPTT (or, with
    ``spatial``, with the previous state detached at every step)."""
    module.zero_grad()
    c0 = module.initial_state(x.shape[1], sensitivities=False).c
    y = module._readout(x, unrolled_states(module, x, reset, c0, spatial))
    loss_fn(y, 0).backward()
    return {n: q.grad.clone() for n, q in module.named_parameters()}


def per_step_rtrl(module, x: Tensor, reset: Optional[Tensor], loss_fn, sens=None, c0=None):
    """Textbook RTRL over ``x``: returns (gradients, final c, final sensitivities as a tuple).

    The loss's local gradient ``g_t = ∂L/∂c_t`` (through the readout only) comes from autograd on
    detached states; the recurrent parameters' gradient is ``Σ_t Σ_b g_t ⊙ S_t`` (for a complex
    state, ``Re(conj(g_t) ⊙ S_t)``: PyTorch's gradient of a complex tensor is ``∂L/∂Re + i ∂L/∂Im``).
    """
    cell = module.cell
    T, B, D = x.shape
    K, J, N = cell.num_gates, cell.num_recurrent, cell.hidden_size
    theta = cell.weight_hh.detach()
    with torch.no_grad():
        p = project(module, x)
        sdt = cell.state_dtype(x.dtype)
        c = torch.zeros(B, N, dtype=sdt) if c0 is None else c0.clone()
        if sens is None:
            s_w = torch.zeros(B, K, N, D, dtype=sdt)
            s_b = torch.zeros(B, K, N, dtype=sdt)
            s_th = torch.zeros(B, J, N, dtype=sdt)
        else:
            s_w, s_b, s_th = (s.clone() for s in sens)
            if cell.complex_input:  # the engine stores the re gate's only: the im gate's is i times it
                s_w, s_b = torch.cat((s_w, 1j * s_w), -1), torch.cat((s_b, 1j * s_b), -1)
            s_w = s_w.transpose(1, 2).reshape(B, K, N, D)
            s_b = s_b.view(B, K, N)
        cs, states = [], []
        for t in range(T):
            keep = x.new_ones(B, 1) if reset is None else (~reset[t]).to(x.dtype)[:, None]
            c = c * keep
            s_w, s_b, s_th = s_w * keep[..., None, None], s_b * keep[..., None], s_th * keep[..., None]
            a, u, v = cell.local_derivatives(c, p[t], theta)
            s_w = a[:, None, :, None] * s_w + u[..., None] * x[t][:, None, None, :]
            s_b = a[:, None, :] * s_b + u
            s_th = a[:, None, :] * s_th + v
            c = cell.step(c, p[t], theta)
            cs.append(c)
            states.append((s_w, s_b, s_th))
    module.zero_grad()
    c_seq = torch.stack(cs).requires_grad_(True)
    loss_fn(module._readout(x, c_seq), 0).backward()  # readout grads + local g_t
    g = c_seq.grad
    grads = {n: (q.grad.clone() if q.grad is not None else torch.zeros_like(q))
             for n, q in module.named_parameters()}
    for t, (sw, sb, sth) in enumerate(states):
        gt = g[t][:, None, :].conj()
        grads["cell.weight_ih"] += (gt[..., None] * sw).sum(0).reshape(K * N, D).real
        grads["cell.bias"] += (gt * sb).sum(0).reshape(K * N).real
        grads["cell.weight_hh"] += (gt * sth).sum(0).real
    kept = K // 2 if cell.complex_input else K
    final = (s_w[:, :kept].reshape(B, kept * N, D).transpose(1, 2), s_b[:, :kept].reshape(B, kept * N), s_th)
    return grads, c, final
