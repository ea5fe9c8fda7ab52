"""Exactness of the chunked RTRL engine, in float64, for every element-wise cell.

One parametrised suite: adding a module to ``rtrl.nn.MODULES`` runs it through all of it.
"""

from __future__ import annotations

import pytest
import torch
from oracles import bptt_gradients, per_step_rtrl, project, random_sequence, rel_err, unrolled_states

from rtrl.nn import LRU, MODULES, RTU, DiagonalLinearRNN, ELSTM, LinearRTU

T, B, D, N = 23, 3, 5, 4
SEGMENTS = [(0, 7), (7, 8), (8, 19), (19, 23)]  # uneven, one of length 1
TOL = 1e-9


def make_problem(name: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    module = MODULES[name](D, N, **kw).double()
    if not module.cell.complex_state:  # (the complex cells' ring init already has slow units)
        with torch.no_grad():  # larger recurrent weights than the init, so memory matters
            module.cell.weight_hh.mul_(5.0)
    return (module, *random_sequence(T, B, D, N, boundary=8))


def rtrl_over_segments(module, x, reset, loss_fn, segments):
    module.zero_grad()
    state = module.initial_state(B)
    for a, b in segments:
        y, state = module(x[a:b], state, reset[a:b])
        loss_fn(y, a).backward()
    return {n: q.grad.clone() for n, q in module.named_parameters()}, state


@pytest.fixture(params=sorted(MODULES))
def cell_name(request):
    return request.param


def test_segments_equal_full_bptt(cell_name):
    module, x, reset, loss_fn = make_problem(cell_name)
    ref = bptt_gradients(module, x, reset, loss_fn)
    got, _ = rtrl_over_segments(module, x, reset, loss_fn, SEGMENTS)
    assert set(got) == set(ref)
    for n in ref:
        assert rel_err(got[n], ref[n]) < TOL, n
    # the check can fail: truncating the carry (TBPTT) gives a visibly different gradient
    module.learning = "bptt"
    module.zero_grad()
    state = module.initial_state(B)
    for a, b in SEGMENTS:
        y, state = module(x[a:b], state.detach(), reset[a:b])
        loss_fn(y, a).backward()
    assert rel_err(module.cell.weight_ih.grad, ref["cell.weight_ih"]) > 1e-3


def test_matches_per_step_oracle_with_sensitivities(cell_name):
    module, x, reset, loss_fn = make_problem(cell_name, seed=1)
    got, state = rtrl_over_segments(module, x, reset, loss_fn, SEGMENTS)
    # the oracle walks the same segments, carrying its own sensitivities
    total, sens, c = None, None, None
    for a, b in SEGMENTS:
        grads, c, sens = per_step_rtrl(module, x[a:b], reset[a:b], lambda y, t0, a=a: loss_fn(y, a), sens, c)
        total = grads if total is None else {n: total[n] + grads[n] for n in grads}
    for n in total:
        assert rel_err(got[n], total[n]) < TOL, n
    assert rel_err(state.c, c) < TOL
    for field, s_got, s_ref in zip(state.sensitivities._fields, state.sensitivities, sens):
        assert rel_err(s_got, s_ref) < TOL, field


def test_fully_online_single_steps(cell_name):
    module, x, reset, loss_fn = make_problem(cell_name, seed=2)
    ref = bptt_gradients(module, x, reset, loss_fn)
    got, _ = rtrl_over_segments(module, x, reset, loss_fn, [(t, t + 1) for t in range(T)])
    for n in ref:
        assert rel_err(got[n], ref[n]) < TOL, n


def test_bptt_mode_is_autograd(cell_name):
    module, x, reset, loss_fn = make_problem(cell_name, seed=3, learning="bptt")
    ref = bptt_gradients(module, x, reset, loss_fn)
    # state not detached between calls: full BPTT across segments
    module.zero_grad()
    state, loss = module.initial_state(B), 0.0
    for a, b in SEGMENTS:
        y, state = module(x[a:b], state, reset[a:b])
        loss = loss + loss_fn(y, a)
    loss.backward()
    for n in ref:
        assert rel_err(module.get_parameter(n).grad, ref[n]) < TOL, n
    # gradient flows into an incoming state that requires grad
    c0 = torch.randn_like(module.initial_state(B).c).requires_grad_(True)
    y, _ = module(x, module.initial_state(B)._replace(c=c0), reset)
    loss_fn(y, 0).backward()
    c0_ref = c0.detach().clone().requires_grad_(True)
    loss_fn(module._readout(x, unrolled_states(module, x, reset, c0_ref)), 0).backward()
    assert rel_err(c0.grad, c0_ref.grad) < TOL


def test_input_gets_within_segment_gradient(cell_name):
    module, x, reset, loss_fn = make_problem(cell_name, seed=4)
    state = module.initial_state(B)
    _, state = module(x[:5], state, reset[:5])
    xs = x[5:12].clone().requires_grad_(True)
    y, _ = module(xs, state, reset[5:12])
    loss_fn(y, 5).backward()
    xr = x[5:12].clone().requires_grad_(True)
    loss_fn(module._readout(xr, unrolled_states(module, xr, reset[5:12], state.c)), 5).backward()
    assert rel_err(xs.grad, xr.grad) < TOL


def test_local_derivatives_match_autograd(cell_name):
    module, x, reset, _ = make_problem(cell_name, seed=5)
    cell = module.cell
    p = project(module, x)[0].detach()
    c_prev = torch.randn_like(module.initial_state(B).c)
    theta = cell.weight_hh.detach()
    a, u, v = cell.local_derivatives(c_prev, p, theta)

    def directional(fn, primal, tangent):  # forward-mode autograd: the Jacobian times a tangent
        return torch.func.jvp(fn, (primal,), (tangent,))[1]

    # a random tangent per unit: an element-wise Jacobian gives exactly diag · tangent. For a
    # complex state, tangents dc and i·dc check that the step is complex-linear in c_prev too.
    dc = torch.randn_like(c_prev)
    for tangent in ([dc, 1j * dc] if c_prev.is_complex() else [dc]):
        got = directional(lambda c: cell.step(c, p, theta), c_prev, tangent)
        assert torch.allclose(got, a * tangent, atol=1e-12)
    for k in range(cell.num_gates):
        dp = torch.zeros_like(p)
        dp[:, k] = torch.randn_like(p[:, k])
        got = directional(lambda q: cell.step(c_prev, q, theta), p, dp)
        assert torch.allclose(got, u[:, k] * dp[:, k], atol=1e-12), k
    for j in range(cell.num_recurrent):
        dth = torch.zeros_like(theta)
        dth[j] = torch.randn_like(theta[j])
        got = directional(lambda th: cell.step(c_prev, p, th), theta, dth)
        assert torch.allclose(got, v[:, j] * dth[j], atol=1e-12), j


def test_inference_path_matches(cell_name):
    module, x, reset, _ = make_problem(cell_name, seed=6)
    y_train, s_train = module(x, module.initial_state(B), reset)
    with torch.no_grad():
        y_inf, s_inf = module(x, module.initial_state(B, sensitivities=False), reset)
    assert s_inf.sensitivities is None
    assert torch.allclose(y_train, y_inf, atol=1e-14, rtol=0)
    assert torch.allclose(s_train.c, s_inf.c, atol=1e-14, rtol=0)


def test_reset_starts_a_fresh_episode(cell_name):
    module, x, _, _ = make_problem(cell_name, seed=7)
    reset = torch.zeros(T, B, dtype=torch.bool)
    reset[10] = True
    y, _ = module(x, module.initial_state(B), reset)
    y_fresh, _ = module(x[10:], module.initial_state(B))
    assert torch.allclose(y[10:], y_fresh, atol=1e-14, rtol=0)
    y_carried, _ = module(x, module.initial_state(B))  # without the reset, memory shows
    assert not torch.allclose(y_carried[10:], y_fresh, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(cell_name, dtype):
    torch.manual_seed(8)
    module = MODULES[cell_name](D, N).to(dtype)
    x = torch.randn(T, B, D, dtype=dtype)
    y, state = module(x, module.initial_state(B))
    y.sum().backward()
    state_dtype = module.cell.state_dtype(dtype)  # complex64/128 for the complex cells
    assert y.dtype == dtype and state.c.dtype == state_dtype
    assert all(s.dtype == state_dtype for s in state.sensitivities)
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in module.parameters())


def test_spatial_rule_is_autograd_without_credit_through_time(cell_name):
    module, x, reset, loss_fn = make_problem(cell_name, seed=9, learning="spatial")
    ref = bptt_gradients(module, x, reset, loss_fn, spatial=True)
    xs = x.clone().requires_grad_(True)
    module.zero_grad()
    state = module.initial_state(B)
    assert state.sensitivities is None
    for a, b in SEGMENTS:
        y, state = module(xs[a:b], state, reset[a:b])
        assert not state.c.requires_grad
        loss_fn(y, a).backward()
    for n in ref:
        assert rel_err(module.get_parameter(n).grad, ref[n]) < TOL, n
    xr = x.clone().requires_grad_(True)
    c0 = module.initial_state(B).c
    loss_fn(module._readout(xr, unrolled_states(module, xr, reset, c0, spatial=True)), 0).backward()
    assert rel_err(xs.grad, xr.grad) < TOL
    # and it is a different rule: full BPTT's gradient differs
    module.learning = "bptt"
    full = bptt_gradients(module, x, reset, loss_fn)
    assert rel_err(ref["cell.weight_hh"], full["cell.weight_hh"]) > 1e-3


def test_registry_and_complex_layers():
    assert MODULES == {"elstm": ELSTM, "diagonal": DiagonalLinearRNN, "lru": LRU, "rtu": RTU,
                       "rtu-linear": LinearRTU}
    rtu = RTU(D, 6)
    assert rtu.hidden_size == 6 and rtu.state_size == 3
    y, state = rtu(torch.randn(2, B, D), rtu.initial_state(B))
    assert y.shape == (2, B, 6) and state.c.shape == (B, 3) and state.c.dtype == torch.complex64
    assert (y >= 0).all()  # ReLU on the output
    with pytest.raises(ValueError, match="needs torch.complex64"):  # a real state for a complex cell
        rtu(torch.randn(2, B, D), state.map(lambda t: t.real.contiguous()))
    with pytest.raises(ValueError, match="even"):
        RTU(D, 5)
    lru = LRU(D, N, r_min=0.5, r_max=0.9)
    lam_abs = torch.exp(-torch.exp(lru.cell.weight_hh[0]))
    assert ((lam_abs >= 0.5 - 1e-6) & (lam_abs <= 0.9 + 1e-6)).all()


def test_complex_cell_without_the_half_sensitivity_shortcut():
    """The generic complex path (every gate's sensitivities carried) agrees with full BPTT, and its
    im gate's sensitivities are i times the re gate's: what ``complex_input`` relies on."""
    module, x, reset, loss_fn = make_problem("lru", seed=10)
    ref = bptt_gradients(module, x, reset, loss_fn)
    module.cell.complex_input = False
    got, state = rtrl_over_segments(module, x, reset, loss_fn, SEGMENTS)
    for n in ref:
        assert rel_err(got[n], ref[n]) < TOL, n
    s_w = state.sensitivities.weight_ih
    assert s_w.shape[-1] == 2 * N
    assert rel_err(s_w[..., N:], 1j * s_w[..., :N]) < TOL
