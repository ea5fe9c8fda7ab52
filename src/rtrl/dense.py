"""Exact full RTRL for dense, fully recurrent networks: the ``O(N⁴)`` baseline.

This is the textbook algorithm the element-wise cells exist to avoid, kept for the complexity
study and as a reference. Two layers, used exactly like :class:`rtrl.nn.ELSTM`:

    m = DenseRTRLRNN(input_size, hidden_size)       # h_t = tanh(W x_t + R h_{t-1} + b)
    m = DenseRTRLLSTM(input_size, hidden_size)      # standard LSTM, gates (i, f, g, o)
    state = m.initial_state(batch_size)
    y, state = m(x, state, reset=None)              # x (T, B, D) -> y (T, B, N), y_t = h_t
    loss(y).backward()                              # .grad = exact, untruncated gradient

**Parameters as one matrix.** Every gate pre-activation is ``p_t = W x_t + R h_{t-1} + b``
(``G·N`` rows, ``G = 1`` for the RNN and 4 for the LSTM), i.e. ``p_t = Θ ξ_t`` with
``Θ = [W | R | b]`` of shape ``(G·N, E)``, ``E = D + N + 1``, and ``ξ_t = [x_t; h_{t-1}; 1]``.
So ``∂p_t[r]/∂Θ[r', :] = [r = r'] ξ_t``: the immediate term of the sensitivity update is a single
diagonal add, whatever block of ``Θ`` a parameter lives in. ``P = G·N·E`` parameters in all.

**Sensitivities.** The recurrent state ``s_t ∈ R^M`` (the RNN: ``h_t``, ``M = N``; the LSTM:
``[h_t; c_t]``, ``M = 2N``) carries ``J_t = ds_t/dΘ`` of shape ``(B, M, G·N, E)``, i.e.
``O(N³)`` numbers per stream. With ``Z^k_t = dp^k_t/dΘ = R_k J^h_{t-1} + [immediate ξ_t]``
(``R_k`` the ``N × N`` block of gate ``k``), the recursion is

    RNN:   J^h_t = (1 − h_t²) ⊙ Z_t
    LSTM:  J^c_t = f ⊙ J^c_{t-1} + (c_{t-1} f(1−f)) ⊙ Z^f + (g i(1−i)) ⊙ Z^i + (i(1−g²)) ⊙ Z^g
           J^h_t = (tanh(c_t) o(1−o)) ⊙ Z^o + (o(1−tanh² c_t)) ⊙ J^c_t

(``⊙`` scales row ``n`` of ``J`` by the ``(B, N)`` coefficient). The products ``R_k J^h_{t-1}``
cost ``G·N² · P = O(N⁴)`` per step and stream: this is what makes full RTRL intractable.

**Gradient.** The exact gradient of a segment's loss is ``Σ_t g_t · J_t`` with
``g_t = ∂L/∂s_t`` through the readout. Unrolled over the segment it equals the within-segment
BPTT gradient plus the carry-in term ``(∂L/∂s_0) · J_0`` (the identity of :mod:`rtrl.exact`,
here with dense Jacobians). So the step runs in ordinary autograd from a start state ``s_0``
that a small autograd function (:class:`_CarryIn`) attaches to ``J_0``: its backward adds
``Σ_b ∂L/∂s_0 · J_0`` to ``Θ``'s gradient. The sensitivities are advanced per step alongside,
without a graph. With ``T = 1`` this is literally ``g_1 · J_1`` split in two; in every case the
segment holds ``J_0`` and ``J_T`` (never one ``J`` per step) and the usual BPTT activations.

Reset semantics are those of :mod:`rtrl.nn`: ``reset[t, b] = True`` zeroes the state and the
sensitivities of stream ``b`` before step ``t``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtrl.checks import check_segment, check_sizes
from rtrl.state import RecurrentState

__all__ = ["DenseRTRLRNN", "DenseRTRLLSTM", "DenseSensitivities"]


class DenseSensitivities(NamedTuple):
    """``state`` ``(B, M, G·N, E)``: ``state[b, m, r, e] = ∂s[b, m]/∂Θ[r, e]`` with
    ``Θ = [weight_ih | weight_hh | bias]`` (see the module docstring)."""

    state: Tensor

    def map(self, fn: Callable[[Tensor], Tensor]) -> "DenseSensitivities":
        return DenseSensitivities(fn(self.state))


class _CarryIn(torch.autograd.Function):
    """Identity on the start state ``s_0``; its backward adds the carry-in term.

    Inputs: ``contract`` (a function), ``s0 (B, M)`` (detached), ``weight_ih (G·N, D)``,
    ``weight_hh (G·N, N)``, ``bias (G·N,)``, then the sensitivity tensors. Backward receives
    ``∂L/∂s_0 (B, M)`` (the whole segment's dependence on the past) and returns
    ``contract(∂L/∂s_0, *sensitivities)`` ``(G·N, E)``, i.e. ``Σ_{b,m} ∂L/∂s_0[b,m] · J_0[b,m]``
    for whatever (exact or approximate) ``J_0`` the sensitivities stand for, split into the three
    parameters' shapes: the part of the gradient that BPTT inside the segment cannot see.
    """

    @staticmethod
    def forward(ctx, contract, s0: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor,
                *sens: Tensor) -> Tensor:
        ctx.save_for_backward(*sens)
        ctx.contract = contract
        ctx.split = (weight_ih.shape[1], weight_hh.shape[1], 1)
        return s0.clone()

    @staticmethod
    def backward(ctx, grad_s0: Tensor):
        sens = ctx.saved_tensors
        g_w, g_r, g_b = ctx.contract(grad_s0, *sens).split(ctx.split, dim=1)
        # no gradient for the function, s0 (a detached state) or the sensitivities
        return (None, None, g_w, g_r, g_b.squeeze(1), *(None for _ in sens))


def _contract_dense(grad_s0: Tensor, sens: Tensor) -> Tensor:
    """``Σ_{b,m} grad_s0[b,m] · sens[b,m]``: one GEMV over ``(B·M)`` rows, ``(1, B·M) @ (B·M, G·N·E)``."""
    b, m, rows, e = sens.shape
    return (grad_s0.reshape(1, b * m) @ sens.reshape(b * m, rows * e)).view(rows, e)


def _add_immediate(z: Tensor, xi: Tensor, gate: int, n: int) -> None:
    """In place: ``z[b, i, gate·N + i, :] += ξ[b]`` for every unit ``i``.

    ``z`` ``(B, N, G·N, E)`` is ``dp^gate/dΘ``; ``ξ`` ``(B, E)``. This is ``∂p^gate_i/∂Θ`` at fixed
    ``h_{t-1}``: only row ``gate·N + i`` of ``Θ`` feeds ``p^gate_i``, through ``ξ``.
    """
    block = z[:, :, gate * n : (gate + 1) * n]  # (B, N, N, E)
    torch.diagonal(block, dim1=1, dim2=2).add_(xi.unsqueeze(-1))  # diagonal view: (B, E, N)


class _DenseRTRL(nn.Module):
    """Shared machinery; cells define ``num_gates``, ``state_factor`` (``M / N``), ``_step``
    (differentiable), ``_local`` (its local derivatives) and ``_propagate`` (the exact sensitivity
    update, no graph).

    A learning rule is the sensitivity it carries: ``_zero_sensitivities``,
    ``_sensitivity_shapes``, ``_advance`` (one step, no graph) and ``_contract`` (the carry-in
    product). The defaults are exact RTRL; :mod:`rtrl.approx` overrides them with approximations.
    """

    num_gates: int = 1
    state_factor: int = 1
    rule: str = "exact RTRL"
    _sensitivity_type: type = DenseSensitivities

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        check_sizes(input_size, hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        rows = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size))
        self.bias = nn.Parameter(torch.empty(rows))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in ``±1/√N``, as ``torch.nn.RNN``/``LSTM``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @property
    def state_size(self) -> int:
        """``M``: the length of the recurrent state vector ``s_t``."""
        return self.state_factor * self.hidden_size

    @property
    def sensitivity_shape(self) -> tuple[int, int, int]:
        """``(M, G·N, E)``: one stream's sensitivity tensor (``M·G·N·E = O(N³)`` numbers)."""
        return (self.state_size, self.num_gates * self.hidden_size, self.input_size + self.hidden_size + 1)

    def initial_state(
        self, batch_size: int, sensitivities: bool = True, device=None, dtype=None
    ) -> RecurrentState:
        """Zero state ``c (B, M)`` and zero sensitivities for ``batch_size`` streams.

        ``sensitivities=False`` gives a state for inference under ``torch.no_grad()``."""
        w = self.weight_ih
        kw = dict(device=device or w.device, dtype=dtype or w.dtype)
        c = torch.zeros(batch_size, self.state_size, **kw)
        sens = self._zero_sensitivities(batch_size, **kw) if sensitivities else None
        return RecurrentState(c, sens)

    # --- the learning rule: exact RTRL here, approximations in rtrl.approx -----------------
    @property
    def _sensitivity_shapes(self) -> list[tuple[int, ...]]:
        """One stream's shape of each field of the sensitivity tuple."""
        return [self.sensitivity_shape]

    def _zero_sensitivities(self, batch_size: int, **kw):
        return self._sensitivity_type(*(torch.zeros(batch_size, *shape, **kw) for shape in self._sensitivity_shapes))

    def _advance(self, sens, s_prev: Tensor, gates: tuple[Tensor, ...], xi: Tensor):
        """Sensitivities after one step (no graph), from those before it: see ``_propagate``."""
        return DenseSensitivities(self._propagate(sens.state, s_prev, gates, xi))

    _contract = staticmethod(_contract_dense)

    # --- the cell: subclasses -------------------------------------------------------------
    def _step(self, p_t: Tensor, s_prev: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """``p_t (B, G·N)`` input projection, ``s_prev (B, M)`` -> ``s_t (B, M)`` and the gate
        values the sensitivity update needs (differentiable; detached by the caller)."""
        raise NotImplementedError

    def _local(self, s_prev: Tensor, gates: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """The step's local derivatives, per unit ``n``, with the state split in ``S = M/N`` parts
        (``s^0 = h``; the LSTM adds ``s^1 = c``):

        ``U (B, S, G, N)``: ``∂s^j_n/∂p^k_n``, the derivative by gate ``k``'s pre-activation;
        ``C (B, S, S, N)``: ``∂s^j_n/∂s^{j'}_{t-1,n}`` along the paths that avoid the pre-activations.
        So ``ds_t/ds_{t-1} = U · R · (h part) + C`` and ``∂s_t/∂Θ`` at fixed ``s_{t-1}`` is ``U ⊗ ξ_t``.
        """
        raise NotImplementedError

    def _propagate(self, sens: Tensor, s_prev: Tensor, gates: tuple[Tensor, ...], xi: Tensor) -> Tensor:
        """``J_{t-1} (B, M, G·N, E)`` -> ``J_t``, given ``s_{t-1}``, the step's gates and ``ξ_t (B, E)``."""
        raise NotImplementedError

    def _gate_sensitivity(self, sens_h: Tensor, gate: int, xi: Tensor) -> Tensor:
        """``Z^gate = R_gate J^h_{t-1} + immediate``: ``(B, N, G·N, E)``. The ``O(N⁴)`` step.

        One batched GEMM ``(N, N) · (N, G·N·E)`` per stream (``bmm`` with an expanded ``R``: measured
        faster on CPU than ``torch.matmul``'s broadcasting, and than a loop of ``mm``)."""
        n, b = self.hidden_size, sens_h.shape[0]
        r = self.weight_hh.detach()[gate * n : (gate + 1) * n]
        z = torch.bmm(r.expand(b, n, n), sens_h.reshape(b, n, -1)).view(b, n, *sens_h.shape[2:])
        _add_immediate(z, xi, gate, n)
        return z

    # --- the layer ------------------------------------------------------------------------
    def forward(
        self, x: Tensor, state: Optional[RecurrentState] = None, reset: Optional[Tensor] = None
    ) -> tuple[Tensor, RecurrentState]:
        """``x (T, B, D)``, ``state`` for ``B`` streams (zero if ``None``), ``reset (T, B)`` bool.

        Returns ``y (T, B, N)`` (``y_t = h_t``) and the state after the segment (detached)."""
        if state is None:
            state = self.initial_state(x.shape[1] if x.dim() == 3 else 1, device=x.device, dtype=x.dtype)
        self._check_inputs(x, state, reset)
        n = self.hidden_size
        keep = None if reset is None else (~reset).to(x.dtype)[:, :, None]
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(q.requires_grad for q in self.parameters())
        )
        sens = state.sensitivities
        if needs_grad and sens is None:
            raise ValueError(
                f"{type(self).__name__} learns by {self.rule} and needs sensitivities in the state to compute "
                "its gradients; start from m.initial_state(batch_size) (or run under torch.no_grad())"
            )
        s = state.c.detach()
        if needs_grad:  # BPTT inside the segment starts here; the carry-in covers what came before
            s = _CarryIn.apply(self._contract, s, self.weight_ih, self.weight_hh, self.bias, *sens)
        p = F.linear(x, self.weight_ih, self.bias)  # (T, B, G·N), in autograd: within-segment ∇W, ∇b, ∇x
        ones = x.new_ones(x.shape[1], 1)
        ys = []
        for t in range(x.shape[0]):
            if keep is not None:
                s = s * keep[t]
                if sens is not None and not bool(keep[t].all()):  # skip a pass over J when no stream resets
                    k = keep[t, :, 0]  # new tensors: the caller's J_0 stays as it was
                    sens = sens.map(lambda z: z * k.view(-1, *(1,) * (z.dim() - 1)))
            s_prev = s
            s, gates = self._step(p[t], s_prev)
            if sens is not None:
                with torch.no_grad():
                    s_prev_d = s_prev.detach()
                    xi = torch.cat((x[t].detach(), s_prev_d[:, :n], ones), dim=1)
                    sens = self._advance(sens, s_prev_d, tuple(g.detach() for g in gates), xi)
            ys.append(s[:, :n])
        y = torch.stack(ys)
        return y, RecurrentState(s.detach(), sens)

    def _check_inputs(self, x: Tensor, state: RecurrentState, reset: Optional[Tensor]) -> None:
        name = type(self).__name__
        kind = self._sensitivity_type.__name__
        if isinstance(state, RecurrentState) and state.sensitivities is not None \
                and not isinstance(state.sensitivities, self._sensitivity_type):
            raise TypeError(f"state.sensitivities must be {kind} (from {name}.initial_state), "
                            f"got {type(state.sensitivities).__name__}")
        check_segment(name, x, self.input_size, self.weight_ih, state, self.state_size,
                      self._sensitivity_shapes, reset)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class DenseRTRLRNN(_DenseRTRL):
    """Vanilla tanh RNN, ``h_t = tanh(W x_t + R h_{t-1} + b)``, trained by exact full RTRL.

    Args: ``input_size`` ``D``, ``hidden_size`` ``N``. Parameters ``weight_ih (N, D)``,
    ``weight_hh (N, N)``, ``bias (N,)``. State ``c = h (B, N)``; sensitivities ``(B, N, N, D+N+1)``.
    """

    num_gates = 1
    state_factor = 1

    def _step(self, p_t: Tensor, s_prev: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        h = torch.tanh(torch.addmm(p_t, s_prev, self.weight_hh.t()))
        return h, (h,)

    def _local(self, s_prev: Tensor, gates: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        (h,) = gates
        u = (1 - h * h)[:, None, None]  # (B, 1, 1, N)
        return u, torch.zeros_like(u)  # h_{t-1} reaches h_t only through the pre-activation

    def _propagate(self, sens: Tensor, s_prev: Tensor, gates: tuple[Tensor, ...], xi: Tensor) -> Tensor:
        u, _ = self._local(s_prev, gates)
        z = self._gate_sensitivity(sens, 0, xi)
        return z.mul_(u[:, 0, 0, :, None, None])


class DenseRTRLLSTM(_DenseRTRL):
    """Standard LSTM (gates ``i, f, g, o`` stacked in that order, as ``torch.nn.LSTM``), trained
    by exact full RTRL. Output ``y_t = h_t``.

    Args: ``input_size`` ``D``, ``hidden_size`` ``N``. Parameters ``weight_ih (4N, D)``,
    ``weight_hh (4N, N)``, ``bias (4N,)``. State ``c = [h; c] (B, 2N)``; sensitivities
    ``(B, 2N, 4N, D+N+1)``.
    """

    num_gates = 4
    state_factor = 2

    def _step(self, p_t: Tensor, s_prev: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        n = self.hidden_size
        h, c = s_prev[:, :n], s_prev[:, n:]
        z = torch.addmm(p_t, h, self.weight_hh.t())
        i, f, o = torch.sigmoid(z[:, :n]), torch.sigmoid(z[:, n : 2 * n]), torch.sigmoid(z[:, 3 * n :])
        g = torch.tanh(z[:, 2 * n : 3 * n])
        c = f * c + i * g
        tc = torch.tanh(c)
        return torch.cat((o * tc, c), dim=1), (i, f, g, o, tc)

    def _local(self, s_prev: Tensor, gates: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        return self._local_and_dh_dc(s_prev, gates)[:2]

    def _local_and_dh_dc(self, s_prev: Tensor, gates: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
        """``_local``'s ``U``, ``C`` and ``∂h_t/∂c_t = o ⊙ (1 − tanh² c_t)`` ``(B, N)``."""
        i, f, g, o, tc = gates
        c_prev = s_prev[:, self.hidden_size :]
        dh_dc = o * (1 - tc * tc)
        zero = torch.zeros_like(f)
        u_c = torch.stack((g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), zero), 1)  # c_t = f c + i g
        u_h = dh_dc[:, None] * u_c
        u_h[:, 3] = tc * o * (1 - o)  # the output gate reaches h only
        cc = torch.stack((torch.stack((zero, dh_dc * f), 1), torch.stack((zero, f), 1)), 1)
        return torch.stack((u_h, u_c), 1), cc, dh_dc

    def _propagate(self, sens: Tensor, s_prev: Tensor, gates: tuple[Tensor, ...], xi: Tensor) -> Tensor:
        n = self.hidden_size
        u, cc, dh_dc = (v[..., None, None] for v in self._local_and_dh_dc(s_prev, gates))
        f = cc[:, 1, 1]
        sens_h, sens_c = sens[:, :n], sens[:, n:]
        new = torch.empty_like(sens)
        new_h, new_c = new[:, :n], new[:, n:]
        torch.mul(sens_c, f, out=new_c)  # the cell's own path: f ⊙ J^c_{t-1}
        # one gate at a time, so at most one (B, N, 4N, E) temporary lives beside J_{t-1} and J_t
        for gate in range(3):
            new_c.addcmul_(self._gate_sensitivity(sens_h, gate, xi), u[:, 1, gate])
        torch.mul(new_c, dh_dc, out=new_h)  # h_t = o ⊙ tanh(c_t): through c_t, then the output gate
        new_h.addcmul_(self._gate_sensitivity(sens_h, 3, xi), u[:, 0, 3])
        return new
