"""The layers' forward equations against hand-written formulas from their papers, and the
cells' initialisation against the papers' recipes.

The exactness suites compare gradients with autograd through the package's own ``cell.step``, so a
wrong step (a swapped ``lerp``, a wrong normalisation ``γ``) would agree with itself there. Here
each layer's outputs and carried state are checked, on every learning rule's path and on the
inference path, with and without resets, over segments, against the equations as the papers write
them, from the layer's parameters alone:

* eLSTM (Irie et al. 2024, Eqs. 5-7, with the official code's biases and output gate on ``c_t``);
* the real diagonal linear cell (the docstring of :mod:`rtrl.cells.diagonal`);
* LRU (Orvieto et al. 2023): ``λ = exp(−exp(ν) + i·exp(θ_log))``, ``γ = sqrt(1 − |λ|²)``,
  ``c_t = λ c_{t−1} + γ (B x_t)``, ``y_t = Re(C c_t) + D x_t``;
* RTU (Elelimy et al. 2024) in the paper's real form: the pair ``(c¹, c²)`` rotated by ``θ`` and
  scaled by ``r``, plus the input, and the activation on the interleaved pairs.
"""

from __future__ import annotations

import math

import pytest
import torch

from rtrl.cells import DiagonalLinearCell, ELSTMCell, LRUCell, RTUCell
from rtrl.nn import MODULES

T, B, D = 50, 3, 5
WIDTH = 6  # hidden_size: the width of y (the RTU: 3 complex units, two features each)
SEGMENTS = [(0, 45), (45, 50)]


def _linear(x, w, b=None):
    out = x @ w.t()
    return out if b is None else out + b


def elstm(m, x, reset):
    cell, n = m.cell, m.state_size
    W, b, (wz, wf) = cell.weight_ih, cell.bias, cell.weight_hh
    c, ys, cs = x.new_zeros(B, n), [], []
    for t in range(T):
        if reset is not None:
            c = torch.where(reset[t, :, None], 0.0, c)
        z = torch.tanh(_linear(x[t], W[:n], b[:n]) + wz * c)
        f = torch.sigmoid(_linear(x[t], W[n:], b[n:]) + wf * c)
        c = f * c + (1 - f) * z
        o = torch.sigmoid(_linear(torch.cat((x[t], c), -1), m.output_gate.weight, m.output_gate.bias))
        ys.append(o * c)
        cs.append(c)
    return torch.stack(ys), cs[-1]


def diagonal(m, x, reset):
    cell = m.cell
    lam = torch.sigmoid(cell.weight_hh[0])
    gamma = torch.sqrt(1 - lam**2)
    c, ys, cs = x.new_zeros(B, m.state_size), [], []
    for t in range(T):
        if reset is not None:
            c = torch.where(reset[t, :, None], 0.0, c)
        c = lam * c + gamma * _linear(x[t], cell.weight_ih, cell.bias)
        o = torch.sigmoid(_linear(torch.cat((x[t], c), -1), m.output_gate.weight, m.output_gate.bias))
        ys.append(o * c)
        cs.append(c)
    return torch.stack(ys), cs[-1]


def lru(m, x, reset):
    cell, n = m.cell, m.state_size
    nu, theta_log = cell.weight_hh
    lam = torch.exp(torch.complex(-torch.exp(nu), torch.exp(theta_log)))
    gamma = torch.sqrt(1 - lam.abs() ** 2)
    W, b = cell.weight_ih, cell.bias
    Bx = lambda xt: torch.complex(_linear(xt, W[:n], b[:n]), _linear(xt, W[n:], b[n:]))  # noqa: E731
    # the readout's weight acts on (Re c_1, Im c_1, Re c_2, ...): Re(C c) = Σ Re C Re c − Im C Im c
    R = m.readout.weight
    C = torch.complex(R[:, 0::2], -R[:, 1::2])
    c, ys, cs = torch.zeros(B, n, dtype=lam.dtype), [], []
    for t in range(T):
        if reset is not None:
            c = torch.where(reset[t, :, None], 0.0, c)
        c = lam * c + gamma * Bx(x[t])
        ys.append((c @ C.t()).real + x[t] @ m.skip.weight.t())
        cs.append(c)
    return torch.stack(ys), cs[-1]


def rtu(m, x, reset):
    cell, n = m.cell, m.state_size
    nu, theta_log = cell.weight_hh
    r, theta = torch.exp(-torch.exp(nu)), torch.exp(theta_log)
    W, b = cell.weight_ih, cell.bias
    g = {"relu": torch.relu, "identity": lambda v: v}[m.activation]
    c1, c2, ys = x.new_zeros(B, n), x.new_zeros(B, n), []
    for t in range(T):
        if reset is not None:
            c1 = torch.where(reset[t, :, None], 0.0, c1)
            c2 = torch.where(reset[t, :, None], 0.0, c2)
        c1, c2 = (r * torch.cos(theta) * c1 - r * torch.sin(theta) * c2 + _linear(x[t], W[:n], b[:n]),
                  r * torch.sin(theta) * c1 + r * torch.cos(theta) * c2 + _linear(x[t], W[n:], b[n:]))
        ys.append(g(torch.stack((c1, c2), -1).flatten(-2)))  # (c¹_1, c²_1, c¹_2, c²_2, ...)
    return torch.stack(ys), torch.complex(c1, c2)


FORMULAS = {"elstm": elstm, "diagonal": diagonal, "lru": lru, "rtu": rtu, "rtu-linear": rtu}


def test_every_module_has_a_formula():
    assert set(FORMULAS) == set(MODULES)


def make(name: str, seed: int = 0):
    torch.manual_seed(seed)
    m = MODULES[name](D, WIDTH).double()
    with torch.no_grad():  # nonzero biases, and the paper's parameters away from their init
        for q in m.parameters():
            q.add_(0.3 * torch.randn_like(q))
    x = torch.randn(T, B, D, dtype=torch.float64)
    reset = torch.zeros(T, B, dtype=torch.bool)
    reset[0, 0] = reset[20, 1] = reset[45, 2] = True  # mid-segment, and at the segment boundary
    return m, x, reset


@pytest.mark.parametrize("path", ["rtrl", "bptt", "spatial", "inference"])
@pytest.mark.parametrize("resets", ["none", "mask"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_forward_follows_the_papers_equations(name, resets, path):
    m, x, reset = make(name)
    if resets == "none":
        reset = None
    with torch.no_grad():
        y_ref, c_ref = FORMULAS[name](m, x, reset)
    if path != "inference":
        m.learning = path
    state = m.initial_state(B, sensitivities=path == "rtrl")
    ys = []
    with torch.set_grad_enabled(path != "inference"):
        for a, b in SEGMENTS:
            y, state = m(x[a:b], state, None if reset is None else reset[a:b])
            ys.append(y.detach())
    y = torch.cat(ys)
    assert y.shape == (T, B, m.hidden_size)
    assert torch.allclose(y, y_ref, atol=1e-12, rtol=1e-10)
    assert torch.allclose(state.c, c_ref, atol=1e-12, rtol=1e-10)



WIDE = 256  # D = N = 256: 65536 input weights and 256 units per cell, enough for the statistics below


def _close(value: float, want: float, rel: float) -> bool:
    return abs(value - want) <= rel * abs(want)


def test_elstm_initialisation_is_the_papers():
    """The official code's init: every weight and bias ~ N(0, 0.1), plus ``forget_bias`` on ``b_f`` (0)."""
    torch.manual_seed(0)
    cell = ELSTMCell(WIDE, WIDE)
    for q in (cell.weight_ih, cell.bias, cell.weight_hh):
        assert abs(q.mean().item()) < 0.03 and _close(q.std().item(), 0.1, 0.15)
    biased = ELSTMCell(WIDE, WIDE, forget_bias=1.0)
    b_z, b_f = biased.bias[:WIDE], biased.bias[WIDE:]
    assert abs(b_z.mean().item()) < 0.03 and _close(b_f.mean().item(), 1.0, 0.03)
    assert _close(b_f.std().item(), 0.1, 0.15)


def test_diagonal_initialisation():
    """``W``, ``b`` ~ N(0, 0.1); decay logits ``ν`` uniform in [0, 4] (λ from 0.5 to 0.98)."""
    torch.manual_seed(0)
    cell = DiagonalLinearCell(WIDE, WIDE)
    for q in (cell.weight_ih, cell.bias):
        assert abs(q.mean().item()) < 0.03 and _close(q.std().item(), 0.1, 0.15)
    nu = cell.weight_hh[0]
    assert nu.min() >= 0 and nu.max() <= 4 and nu.min() < 0.1 and nu.max() > 3.9 and _close(nu.mean().item(), 2, 0.1)


@pytest.mark.parametrize("cls", [LRUCell, RTUCell])
def test_lru_and_rtu_ring_initialisation(cls):
    """Orvieto et al.'s ring init: ``|λ|²`` uniform on ``[r_min², r_max²]`` (uniform by area),
    phase uniform on ``[0, max_phase]``; defaults 0, 1, 2π. Input weights ~ N(0, 1/(2D)), bias 0."""
    torch.manual_seed(0)
    cell = cls(WIDE, WIDE)
    nu, theta_log = cell.weight_hh
    r2, phase = torch.exp(-2 * torch.exp(nu)), torch.exp(theta_log)
    assert r2.min() < 0.05 and r2.max() > 0.95 and _close(r2.mean().item(), 0.5, 0.12)
    assert phase.min() < 0.1 and phase.max() > 2 * math.pi - 0.1 and _close(phase.mean().item(), math.pi, 0.12)
    assert _close(cell.weight_ih.std().item(), 1 / math.sqrt(2 * WIDE), 0.03) and torch.all(cell.bias == 0)
    ring = cls(WIDE, WIDE, r_min=0.5, r_max=0.9, max_phase=1.0)
    r2, phase = torch.exp(-2 * torch.exp(ring.weight_hh[0])), torch.exp(ring.weight_hh[1])
    assert r2.min() >= 0.25 - 1e-6 and r2.max() <= 0.81 + 1e-6 and r2.min() < 0.27 and r2.max() > 0.79
    assert phase.max() <= 1.0 and phase.min() < 0.02
    assert torch.isfinite(cls(4, 4, r_min=0.0, r_max=0.0).weight_hh).all()  # the ring's inner edge


def test_lru_ring_at_the_unit_circle_in_float64():
    """|λ| = 1 exactly would give ν = log(−½ log 1) = −inf: the init clamps |λ|² below 1."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        cell = LRUCell(4, 4, r_min=1.0, r_max=1.0)
    finally:
        torch.set_default_dtype(default)
    assert cell.weight_hh.dtype == torch.float64 and torch.isfinite(cell.weight_hh).all()


def test_lru_ring_at_the_unit_circle_gives_finite_parameters():
    assert torch.isfinite(LRUCell(4, 4, r_min=1.0, r_max=1.0).weight_hh).all()


def test_lru_refuses_a_ring_outside_the_unit_disc():
    LRUCell(4, 4, r_min=0.7, r_max=0.7)  # a circle is a ring
    for r_min, r_max in ((0.9, 0.5), (0.5, 1.5), (-0.1, 0.5)):
        with pytest.raises(ValueError, match=rf"^need 0 <= r_min <= r_max <= 1, got r_min={r_min}, r_max={r_max}$"):
            LRUCell(4, 4, r_min=r_min, r_max=r_max)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_initial_state_takes_the_dtype_asked_for(name):
    """``initial_state(dtype=...)`` of a float32 layer: state and sensitivities in that dtype (its
    complex counterpart for a complex cell), not the layer's."""
    m = MODULES[name](D, WIDTH)
    state = m.initial_state(B, dtype=torch.float64)
    want = torch.complex128 if m.cell.complex_state else torch.float64
    assert state.c.dtype == want and all(s.dtype == want for s in state.sensitivities)
