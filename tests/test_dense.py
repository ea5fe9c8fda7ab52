"""Exactness of full dense RTRL (``rtrl.dense``), in float64, against independent references.

The BPTT reference unrolls the whole, unsegmented sequence with plain tensor code (the RNN) or
``torch.nn.LSTMCell`` carrying the module's weights (the LSTM), so it shares nothing with the code
under test but the parameters.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from oracles import random_sequence, rel_err

from rtrl.dense import DenseRTRLLSTM, DenseRTRLRNN, DenseSensitivities

MODULES = {"rnn": DenseRTRLRNN, "lstm": DenseRTRLLSTM}
T, B, D, N = 17, 3, 3, 4
SEGMENTS = [(0, 6), (6, 7), (7, 15), (15, 17)]  # uneven, one of length 1
TOL = 1e-9


@pytest.fixture(params=sorted(MODULES))
def name(request):
    return request.param


def make_problem(name: str, seed: int = 0):
    torch.manual_seed(seed)
    module = MODULES[name](D, N).double()
    with torch.no_grad():  # larger recurrent weights than the init, so the past matters
        module.weight_hh.mul_(3.0)
    return (module, *random_sequence(T, B, D, N, boundary=7))


def reference_outputs(module, x: torch.Tensor, reset: torch.Tensor, params=None) -> torch.Tensor:
    """``h (T, B, N)`` by plain autograd over the whole sequence, resets applied before each step.

    ``params``: ``(weight_ih, weight_hh, bias)`` to use instead of the module's own."""
    w, r, b = params if params is not None else (module.weight_ih, module.weight_hh, module.bias)
    keep = (~reset).to(x.dtype)[:, :, None]
    h = x.new_zeros(x.shape[1], N)
    c = torch.zeros_like(h)
    lstm = isinstance(module, DenseRTRLLSTM)
    out = []
    for t in range(x.shape[0]):
        h, c = h * keep[t], c * keep[t]
        if lstm:
            i, f, g, o = (F.linear(x[t], w, b) + h @ r.t()).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:
            h = torch.tanh(F.linear(x[t], w, b) + h @ r.t())
        out.append(h)
    return torch.stack(out)


def bptt_gradients(module, x, reset, loss_fn) -> dict[str, torch.Tensor]:
    module.zero_grad()
    loss_fn(reference_outputs(module, x, reset), 0).backward()
    return {n: q.grad.clone() for n, q in module.named_parameters()}


def rtrl_over_segments(module, x, reset, loss_fn, segments, truncate: bool = False):
    module.zero_grad()
    state = module.initial_state(B)
    for a, b in segments:
        if truncate:  # TBPTT: forget the sensitivities at every segment boundary
            state = state._replace(sensitivities=state.sensitivities.map(torch.zeros_like))
        y, state = module(x[a:b], state, reset[a:b])
        loss_fn(y, a).backward()
    return {n: q.grad.clone() for n, q in module.named_parameters()}, state


def test_segments_equal_full_bptt(name):
    module, x, reset, loss_fn = make_problem(name)
    ref = bptt_gradients(module, x, reset, loss_fn)
    got, state = rtrl_over_segments(module, x, reset, loss_fn, SEGMENTS)
    assert set(got) == set(ref)
    for n in ref:
        assert rel_err(got[n], ref[n]) < TOL, n
    assert rel_err(state.c[:, :N], reference_outputs(module, x, reset)[-1]) < TOL
    # the check can fail: truncating the carry (TBPTT) gives a visibly different gradient
    tbptt, _ = rtrl_over_segments(module, x, reset, loss_fn, SEGMENTS, truncate=True)
    assert rel_err(tbptt["weight_hh"], ref["weight_hh"]) > 1e-3


def test_fully_online_single_steps(name):
    module, x, reset, loss_fn = make_problem(name, seed=1)
    ref = bptt_gradients(module, x, reset, loss_fn)
    got, _ = rtrl_over_segments(module, x, reset, loss_fn, [(t, t + 1) for t in range(T)])
    for n in ref:
        assert rel_err(got[n], ref[n]) < TOL, n


def test_sensitivities_are_the_jacobian(name):
    """``J_T`` equals ``ds_T/dΘ`` computed by autograd, block by block of ``Θ = [W | R | b]``."""
    module, x, reset, _ = make_problem(name, seed=2)
    x, reset = x[:6], reset[:6]
    reset[3, 2] = True
    _, state = module(x, module.initial_state(B), reset)
    params = (module.weight_ih, module.weight_hh, module.bias)

    def h_last(w, r, b):
        return reference_outputs(module, x, reset, (w, r, b))[-1]

    jac = torch.autograd.functional.jacobian(h_last, tuple(q.detach() for q in params))
    sens = state.sensitivities.state[:, :N]  # dh_T/dΘ, (B, N, G·N, E)
    sens_w, sens_r, sens_b = sens.split((D, N, 1), dim=-1)
    assert rel_err(sens_w, jac[0]) < TOL
    assert rel_err(sens_r, jac[1]) < TOL
    assert rel_err(sens_b.squeeze(-1), jac[2]) < TOL


def test_input_gets_within_segment_gradient(name):
    module, x, reset, loss_fn = make_problem(name, seed=3)
    _, state = module(x[:5], module.initial_state(B), reset[:5])
    xs = x[5:11].clone().requires_grad_(True)
    y, _ = module(xs, state, reset[5:11])
    loss_fn(y, 5).backward()
    # reference: BPTT over the segment from the carried state, constant
    xr = x[5:11].clone().requires_grad_(True)
    y_ref, _ = module(
        xr, state._replace(sensitivities=state.sensitivities.map(torch.zeros_like)), reset[5:11]
    )
    loss_fn(y_ref, 5).backward()
    assert rel_err(xs.grad, xr.grad) < TOL


def test_inference_path_matches(name):
    module, x, reset, _ = make_problem(name, seed=4)
    y_train, s_train = module(x, module.initial_state(B), reset)
    with torch.no_grad():
        y_inf, s_inf = module(x, module.initial_state(B, sensitivities=False), reset)
    assert s_inf.sensitivities is None
    assert torch.equal(y_train.detach(), y_inf) and torch.equal(s_train.c, s_inf.c)
    assert torch.allclose(y_inf, reference_outputs(module, x, reset), atol=1e-14, rtol=0)


def test_lstm_is_torch_lstm():
    """Same gates, order and outputs as ``torch.nn.LSTM`` given the same weights."""
    module, x, _, _ = make_problem("lstm", seed=6)
    ref = torch.nn.LSTM(D, N, dtype=torch.float64)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(module.weight_ih)
        ref.weight_hh_l0.copy_(module.weight_hh)
        ref.bias_ih_l0.copy_(module.bias)
        ref.bias_hh_l0.zero_()
        y_ref, (h_ref, c_ref) = ref(x)
        y, state = module(x, module.initial_state(B, sensitivities=False))
    assert torch.allclose(y, y_ref, atol=1e-14, rtol=0)
    assert torch.allclose(state.c, torch.cat((h_ref[0], c_ref[0]), 1), atol=1e-14, rtol=0)


def test_float32_runs(name):
    torch.manual_seed(5)
    module = MODULES[name](D, N)
    y, state = module(torch.randn(T, B, D), module.initial_state(B))
    y.sum().backward()
    assert y.dtype == torch.float32 and state.sensitivities.state.dtype == torch.float32
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in module.parameters())


@pytest.mark.parametrize(
    "shape, match",
    [((B, D), r"shape \(T, B, input_size\)"), ((T, B, D + 1), "input_size=3"), ((0, B, D), "empty")],
)
def test_wrong_input_shape(name, shape, match):
    m = MODULES[name](D, N)
    with pytest.raises(ValueError, match=match):
        m(torch.randn(*shape), m.initial_state(shape[1] if len(shape) == 3 else B))


def test_bad_state_and_reset(name):
    m = MODULES[name](D, N)
    x = torch.randn(T, B, D)
    with pytest.raises(ValueError, match="same streams"):
        m(x, m.initial_state(B + 1))
    state = m.initial_state(B)
    bad = state._replace(sensitivities=DenseSensitivities(torch.zeros(B, 1, 2, 3)))
    with pytest.raises(ValueError, match="sensitivities.state has shape"):
        m(x, bad)
    with pytest.raises(ValueError, match="needs sensitivities"):
        m(x, m.initial_state(B, sensitivities=False))
    with pytest.raises(ValueError, match="reset"):
        m(x, state, torch.zeros(T, B + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\.to\(\)"):
        m(x.double(), state)
