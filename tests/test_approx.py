"""Approximate RTRL (``rtrl.approx``), in float64: SnAp-1 is exact exactly where it should be, and
UORO is unbiased. References: full BPTT by autograd (``test_dense.bptt_gradients``, plain tensor
code or the module's own graph over the whole sequence) and exact dense RTRL (``rtrl.dense``).
"""

from __future__ import annotations

import pytest
import torch

from oracles import random_sequence, rel_err
from test_dense import SEGMENTS, bptt_gradients, rtrl_over_segments

from rtrl.approx import SnAp1LSTM, SnAp1RNN, SnApSensitivities, UOROLSTM, UORORNN, UOROSensitivities
from rtrl.dense import DenseRTRLLSTM, DenseRTRLRNN, DenseSensitivities

T, B, D, N = 17, 3, 3, 4
TOL = 1e-9
SNAP = {"rnn": (SnAp1RNN, DenseRTRLRNN), "lstm": (SnAp1LSTM, DenseRTRLLSTM)}
UORO = {"rnn": UORORNN, "lstm": UOROLSTM}


@pytest.fixture(params=sorted(SNAP))
def name(request):
    return request.param


@pytest.fixture
def one_thread():
    """Many tiny ops: one thread, else a busy 2-core machine makes them ~40× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def snap_problem(name: str, diagonal: bool, seed: int = 0):
    """SnAp-1 module and the exact dense one with the same weights; recurrent blocks ``R_k``
    diagonal (an element-wise recurrence) if ``diagonal``, else full; scaled ×3 so the past matters."""
    torch.manual_seed(seed)
    snap_cls, exact_cls = SNAP[name]
    exact = exact_cls(D, N).double()
    with torch.no_grad():
        mask = torch.eye(N, dtype=torch.float64).repeat(exact.num_gates, 1) if diagonal else 1.0
        exact.weight_hh.mul_(3.0 * mask)
    snap = snap_cls(D, N).double()
    snap.load_state_dict(exact.state_dict())
    return snap, exact


def test_snap1_is_exact_for_an_elementwise_recurrence(name):
    """Diagonal ``R_k``: unit ``n`` depends on its own past only, so SnAp-1's pattern holds every
    nonzero of ``J``. The gradient (every entry of ``Θ``, off-diagonal ``R`` included) equals full
    BPTT over uneven segments with resets, and fully online too."""
    snap, exact = snap_problem(name, diagonal=True)
    x, reset, loss_fn = random_sequence(T, B, D, N, boundary=7)
    ref = bptt_gradients(exact, x, reset, loss_fn)
    for segments in (SEGMENTS, [(t, t + 1) for t in range(T)]):
        got, state = rtrl_over_segments(snap, x, reset, loss_fn, segments)
        for n in ref:
            assert rel_err(got[n], ref[n]) < TOL, (n, segments)
    # and the carried J̃ is the exact J on its pattern: J's entries of unit n by unit n's rows
    _, exact_state = rtrl_over_segments(exact, x, reset, loss_fn, SEGMENTS)
    j = exact_state.sensitivities.state  # (B, S·N, G·N, E)
    s, gn = snap.state_factor, snap.num_gates * N
    rows = torch.arange(gn)
    on_pattern = j.view(B, s, N, gn, -1)[:, :, rows % N, rows]  # (B, S, G·N, E)
    assert rel_err(state.sensitivities.state, on_pattern) < TOL


def test_snap1_is_approximate_for_a_full_recurrence(name):
    """A full ``R`` couples the units: SnAp-1 drops real terms and must differ from BPTT (a check
    that fails if the module secretly did exact RTRL, or ignored ``R``'s off-diagonal entries in
    the forward pass). (Not asserted: that it beats span-1 TBPTT. With these strongly coupled
    weights it does not, on ``weight_ih``, for the RNN.)"""
    snap, exact = snap_problem(name, diagonal=False, seed=1)
    x, reset, loss_fn = random_sequence(T, B, D, N, boundary=7)
    ref = bptt_gradients(exact, x, reset, loss_fn)
    got, _ = rtrl_over_segments(snap, x, reset, loss_fn, [(t, t + 1) for t in range(T)])
    for n in ref:
        assert rel_err(got[n], ref[n]) > 1e-3, n
    y_snap, _ = snap(x, snap.initial_state(B), reset)  # the forward pass itself is the dense one
    y_exact, _ = exact(x, exact.initial_state(B), reset)
    assert torch.equal(y_snap, y_exact)


def snap1_by_masked_dense_rtrl(exact, x, reset, loss_fn, segments):
    """SnAp-1 from its definition: exact dense RTRL whose ``J`` is masked to SnAp-1's pattern (unit
    ``n``'s state by unit ``n``'s parameter rows) after every step. A segment's gradient is BPTT
    inside it plus the carry-in from the masked ``J`` at its start. Returns the gradients and the
    final masked ``J``."""
    m, gn = exact.state_size, exact.num_gates * N
    pattern = (torch.arange(m)[:, None] % N == torch.arange(gn)[None, :] % N).to(x.dtype)[..., None]
    exact.zero_grad()
    state = exact.initial_state(B)
    for a, b in segments:
        y, _ = exact(x[a:b], state, reset[a:b])
        loss_fn(y, a).backward()
        with torch.no_grad():  # the carried J, one step at a time, masked after each
            for t in range(a, b):
                _, state = exact(x[t : t + 1], state, reset[t : t + 1])
                state = state._replace(sensitivities=DenseSensitivities(state.sensitivities.state * pattern))
    return {n: q.grad.clone() for n, q in exact.named_parameters()}, state


@pytest.mark.parametrize("online", [False, True])
def test_snap1_is_dense_rtrl_masked_to_its_pattern(name, online):
    """On a full recurrence (where SnAp-1 is an approximation) its gradient and carried ``J̃`` are
    those of dense exact RTRL with ``J`` masked to the pattern after every step: SnAp-1's
    definition (Menick et al. 2021), with uneven segments and resets mid-segment."""
    snap, exact = snap_problem(name, diagonal=False, seed=5)
    x, reset, loss_fn = random_sequence(T, B, D, N, boundary=7)
    segments = [(t, t + 1) for t in range(T)] if online else SEGMENTS
    ref, ref_state = snap1_by_masked_dense_rtrl(exact, x, reset, loss_fn, segments)
    got, state = rtrl_over_segments(snap, x, reset, loss_fn, segments)
    for n in ref:
        assert rel_err(got[n], ref[n]) < TOL, n
    s, gn = snap.state_factor, snap.num_gates * N
    rows = torch.arange(gn)
    on_pattern = ref_state.sensitivities.state.view(B, s, N, gn, -1)[:, :, rows % N, rows]
    assert rel_err(state.sensitivities.state, on_pattern) < TOL
    assert rel_err(state.c, ref_state.c) < TOL


UORO_T, UORO_D, UORO_N = 5, 2, 3
GROUPS, COPIES = 32, 1024  # 32768 independent UORO samples in all


def _online_gradient(module, x1, reset1, target, copies: int, truncate: bool = False) -> torch.Tensor:
    """Mean over ``copies`` streams, all fed the same sequence, of the fully online gradient of
    ``Σ_t ‖y_t − target_t‖² + Σ y_t³`` (one step per segment): a flat vector over the parameters."""
    module.zero_grad()
    state = module.initial_state(copies)
    x, reset = x1.expand(-1, copies, -1), reset1.expand(-1, copies)
    for t in range(x.shape[0]):
        if truncate:
            state = state._replace(sensitivities=state.sensitivities.map(torch.zeros_like))
        y, state = module(x[t : t + 1], state, reset[t : t + 1])
        (((y - target[t]) ** 2).sum() + (y**3).sum()).backward()
    return torch.cat([q.grad.flatten() for q in module.parameters()]) / copies


@pytest.mark.parametrize("kind", sorted(UORO))
def test_uoro_is_unbiased(kind, one_thread):
    """The mean of many UORO gradients is the exact gradient, within its standard error.

    One tiny sequence (N=3, D=2, T=5, a reset at step 3, one step per segment so that every step
    carries in UORO's estimate) is replicated over ``GROUPS × COPIES = 32 × 1024 = 32768`` streams,
    each with its own random signs. Each group's mean gradient is one sample; with ``m`` their mean
    and ``se = std / √GROUPS`` per coordinate (``P = 72`` coordinates for the LSTM):

    * ``|m − exact| < 4.5 se`` for every coordinate: a t-statistic with 31 degrees of freedom
      exceeds 4.5 with probability ~1e-4, so all ``P`` pass with probability > 99%;
    * ``‖m − exact‖ < 2 ‖se‖``: ``‖m − exact‖² / ‖se‖²`` averages 1 (about ``χ²_P / P``), and 4 is
      far in its tail; and ``‖m − exact‖ / ‖exact‖ < 0.05``.

    The same bounds reject span-1 TBPTT's gradient (biased: no carry-in) by a factor > 20 (measured: 30-50),
    so the test has power. The seeds are fixed: the outcome is deterministic.
    """
    torch.manual_seed(0)
    x1 = torch.randn(UORO_T, 1, UORO_D, dtype=torch.float64)
    target = torch.randn(UORO_T, 1, UORO_N, dtype=torch.float64)
    reset1 = torch.zeros(UORO_T, 1, dtype=torch.bool)
    reset1[3] = True
    exact_cls = SNAP[kind][1]
    exact = exact_cls(UORO_D, UORO_N).double()
    with torch.no_grad():
        exact.weight_hh.mul_(3.0)
    uoro = UORO[kind](UORO_D, UORO_N, generator=torch.Generator().manual_seed(1)).double()
    uoro.load_state_dict(exact.state_dict())

    ref = _online_gradient(exact, x1, reset1, target, 1)
    samples = torch.stack([_online_gradient(uoro, x1, reset1, target, COPIES) for _ in range(GROUPS)])
    mean, se = samples.mean(0), samples.std(0) / GROUPS**0.5
    assert ((mean - ref).abs() < 4.5 * se).all(), ((mean - ref).abs() / se).max()
    assert (mean - ref).norm() < 2 * se.norm()
    assert (mean - ref).norm() < 0.05 * ref.norm()
    tbptt = _online_gradient(exact, x1, reset1, target, 1, truncate=True)
    assert ((tbptt - ref).abs() / se).max() > 20 * 4.5  # the same check catches a biased gradient
    # and the samples really are random: one stream's estimate is far from exact (measured: its
    # standard deviation is 0.8-2.2 times the gradient's norm)
    assert (samples.std(0) * COPIES**0.5).norm() > 0.5 * ref.norm()


def test_uoro_balances_its_two_factors(name):
    """UORO's ``ρ`` minimise the estimate's variance by giving the two factors of each rank-one
    term equal norms (Tallec & Ollivier 2018). From a zero state the first step's estimate is the
    single term ``(ρ_1 ν) (νᵀ I_1 / ρ_1)ᵀ``, so ``‖ũ‖ = ‖θ̃‖`` in every stream (up to ``eps``)."""
    torch.manual_seed(6)
    m = UORO[name](D, N, generator=torch.Generator().manual_seed(6)).double()
    with torch.no_grad():
        _, state = m(torch.randn(1, B, D, dtype=torch.float64), m.initial_state(B))
    u, theta = state.sensitivities
    assert torch.allclose(u.norm(dim=1), theta.flatten(1).norm(dim=1), rtol=1e-5, atol=0)
    assert not torch.allclose(u.norm(dim=1), torch.full((B,), (m.state_size) ** 0.5, dtype=torch.float64))


def test_uoro_step_does_not_depend_on_how_its_estimate_is_factored(name):
    """``ũ θ̃ᵀ = (α ũ)(θ̃ / α)ᵀ``: the same estimate. With ``ρ_0 = sqrt(‖θ̃‖ / ‖D ũ‖)`` the next step
    rescales the carried term to balanced norms, so it is the same for either factoring (up to
    ``eps``), given the same random signs."""
    torch.manual_seed(7)
    m = UORO[name](D, N, generator=torch.Generator().manual_seed(7)).double()
    x = torch.randn(5, B, D, dtype=torch.float64)
    with torch.no_grad():
        _, state = m(x[:4], m.initial_state(B))
        u, theta = state.sensitivities
        steps = []
        for alpha in (1.0, 8.0):
            m.generator = torch.Generator().manual_seed(11)
            _, out = m(x[4:], state._replace(sensitivities=UOROSensitivities(alpha * u, theta / alpha)))
            steps.append(out.sensitivities)
    for a, b in zip(*steps):
        assert rel_err(a, b) < 1e-6


def test_uoro_reset_forgets_the_past(name):
    """A reset zeroes ``ũ`` and ``θ̃``: a stream reset mid-segment carries out of that segment
    sensitivities that do not depend on anything before the reset, and the next segment's gradient
    (whose carry-in reads them) is the same whatever came before. Two runs share the random signs
    and differ only in stream 0's inputs before its reset; without the reset they differ visibly."""

    def run(x, reset):
        m = UORO[name](D, N, generator=torch.Generator().manual_seed(7)).double()
        m.load_state_dict(weights)
        with torch.no_grad():  # segment 1: steps 0-5, advancing the sensitivities only
            _, state = m(x[:6], m.initial_state(B), reset[:6])
        y, _ = m(x[6:], state, reset[6:])  # segment 2: no reset, the loss
        loss_fn(y, 6).backward()
        return state, [q.grad.clone() for q in m.parameters()]

    torch.manual_seed(3)
    weights = UORO[name](D, N).double().state_dict()
    x, _, loss_fn = random_sequence(T, B, D, N, boundary=7)
    x_other = x.clone()
    x_other[:3, 0] = torch.randn(3, D, dtype=torch.float64)  # stream 0 before its reset
    reset = torch.zeros(T, B, dtype=torch.bool)
    reset[3, 0] = True
    (s1, g1), (s2, g2) = run(x, reset), run(x_other, reset)
    assert s1.sensitivities.u.abs().sum() > 0
    for a, b in zip(s1.sensitivities, s2.sensitivities):
        assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    no_reset = torch.zeros(T, B, dtype=torch.bool)
    (s1, g1), (s2, g2) = run(x, no_reset), run(x_other, no_reset)
    assert not torch.allclose(s1.sensitivities.theta[0], s2.sensitivities.theta[0], atol=1e-6)
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2))


def test_state_layouts_and_float32(name):
    torch.manual_seed(4)
    snap, uoro = SNAP[name][0](D, N), UORO[name](D, N)
    s = snap.state_factor
    state = snap.initial_state(B)
    assert isinstance(state.sensitivities, SnApSensitivities)
    assert state.sensitivities.state.shape == (B, s, snap.num_gates * N, D + N + 1)  # O(N(D+N))
    state = uoro.initial_state(B)
    assert isinstance(state.sensitivities, UOROSensitivities)
    assert state.sensitivities.u.shape == (B, s * N)
    assert state.sensitivities.theta.shape == (B, uoro.num_gates * N, D + N + 1)
    for m in (snap, uoro):
        y, st = m(torch.randn(T, B, D), m.initial_state(B))
        y.sum().backward()
        assert y.dtype == torch.float32 and all(t.dtype == torch.float32 for t in st.sensitivities)
        assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in m.parameters())
        with torch.no_grad():  # the inference path carries no sensitivities
            y_inf, st_inf = m(torch.randn(T, B, D), m.initial_state(B, sensitivities=False))
        assert st_inf.sensitivities is None


@pytest.mark.parametrize("rule", ["snap", "uoro"])
def test_bad_inputs(name, rule):
    m = (SNAP[name][0] if rule == "snap" else UORO[name])(D, N)
    x = torch.randn(T, B, D)
    with pytest.raises(ValueError, match=r"shape \(T, B, input_size\)"):
        m(torch.randn(B, D), m.initial_state(B))
    with pytest.raises(ValueError, match="same streams"):
        m(x, m.initial_state(B + 1))
    with pytest.raises(ValueError, match="SnAp-1" if rule == "snap" else "UORO"):
        m(x, m.initial_state(B, sensitivities=False))
    exact_state = SNAP[name][1](D, N).initial_state(B)
    with pytest.raises(TypeError, match="Sensitivities"):  # another rule's sensitivities
        m(x, exact_state)
    state = m.initial_state(B)
    bad = state._replace(sensitivities=state.sensitivities.map(lambda t: t[..., :1]))
    with pytest.raises(ValueError, match="sensitivities.* has shape"):
        m(x, bad)
    with pytest.raises(ValueError, match="reset"):
        m(x, state, torch.zeros(T, B + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\.to\(\)"):
        m(x.double(), state)
    with pytest.raises(ValueError, match="NaN"):
        m(torch.full((T, B, D), float("nan")), state)
    assert not isinstance(state.sensitivities, DenseSensitivities)


def test_bad_uoro_eps():
    with pytest.raises(ValueError, match="eps"):
        UOROLSTM(D, N, eps=0.0)
