"""Every path of the exact engine, value-checked: what ``test_exact.py``'s short, reset-masked
problems never reach.

* ``reset=None``: a linear time-invariant cell (LRU, RTU, diagonal) then has one decay per unit for
  the whole segment, and the engine may take a fast path for it (the carry factors
  ``Λ_t = a^{T-t}`` as powers). The copy task and the README's example run this path.
* Segments of 40+ steps: sums over time may be taken a few steps at a time (in chunks of 16 today).
* Weights that change between segments: the online use of RTRL. The reference holds each
  segment's own weights (one leaf copy per segment) and sums the gradient over all copies: that is
  what RTRL's sensitivities compute, since they are built along the trajectory that really ran.
* float32, against float64, within a stated tolerance.

References are autograd through ``cell.step`` (whose equations ``test_cells.py`` checks against the
papers) over the whole, unsegmented sequence, and the per-step RTRL loop of ``oracles.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from oracles import bptt_gradients, per_step_rtrl, rel_err, unrolled_states

from rtrl.exact import exact_rtrl
from rtrl.nn import MODULES
from rtrl.state import Sensitivities

T, B, D, N = 64, 3, 5, 4
SEGMENTS = [(0, 45), (45, 46), (46, 64)]  # a 45-step segment (longer than any chunk), one step, 18 steps
TOL = 1e-9
RECURRENT = ("cell.weight_ih", "cell.bias", "cell.weight_hh")


@pytest.fixture(params=sorted(MODULES))
def cell_name(request):
    return request.param


def make_module(name: str, seed: int, scale: float = 5.0):
    torch.manual_seed(seed)
    module = MODULES[name](D, N).double()
    if not module.cell.complex_state:  # (the complex cells' ring init already has slow units)
        with torch.no_grad():  # larger recurrent weights than the init, so memory spans the long segment
            module.cell.weight_hh.mul_(scale)
    return module


def make_sequence(resets: str, seed: int):
    """Inputs, resets (``None``, or a mask that cuts the long segment in one stream, lands on a
    segment boundary in another and leaves the third alone) and a loss on every step."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    target = torch.randn(T, B, N, generator=g, dtype=torch.float64)
    reset = None
    if resets == "mask":
        reset = torch.zeros(T, B, dtype=torch.bool)
        reset[0, 0] = reset[30, 0] = True  # inside the long segment
        reset[45, 1] = True  # exactly at a segment boundary
        reset[50, 2] = True  # stream 2 runs 50 steps without one

    def loss_fn(y, t0: int):
        tgt = target[t0 : t0 + y.shape[0], :, : y.shape[-1]]
        return ((y - tgt) ** 2).sum() + (y**3).sum()

    return x, reset, loss_fn


def part(reset, a: int, b: int):
    return None if reset is None else reset[a:b]


def rtrl_over_segments(module, x, reset, loss_fn, segments=SEGMENTS):
    module.zero_grad()
    state = module.initial_state(B)
    for a, b in segments:
        y, state = module(x[a:b], state, part(reset, a, b))
        loss_fn(y, a).backward()
    return {n: q.grad.clone() for n, q in module.named_parameters()}, state


@pytest.mark.parametrize("resets", ["none", "mask"])
def test_long_segments_equal_full_bptt(cell_name, resets):
    module = make_module(cell_name, seed=0)
    x, reset, loss_fn = make_sequence(resets, seed=0)
    ref = bptt_gradients(module, x, reset, loss_fn)
    got, state = rtrl_over_segments(module, x, reset, loss_fn)
    for n in ref:
        assert rel_err(got[n], ref[n]) < TOL, n
    # and the carried-out state and sensitivities are the per-step loop's, field by field
    _, c, sens = per_step_rtrl(module, x, reset, loss_fn)
    assert rel_err(state.c, c) < TOL
    for field, s_got, s_ref in zip(state.sensitivities._fields, state.sensitivities, sens):
        assert rel_err(s_got, s_ref) < TOL, field


@pytest.mark.parametrize("resets", ["none", "mask"])
def test_long_segments_bptt_and_spatial_rules(cell_name, resets):
    """The rules without sensitivities on the same long, reset-free or masked sequence: ``bptt``
    carrying the state (with its graph) across segments is full BPTT; ``spatial`` is autograd with
    the previous state detached at every step."""
    module = make_module(cell_name, seed=1)
    x, reset, loss_fn = make_sequence(resets, seed=1)
    ref = bptt_gradients(module, x, reset, loss_fn)
    module.learning = "bptt"
    module.zero_grad()
    state, loss = module.initial_state(B), 0.0
    for a, b in SEGMENTS:
        y, state = module(x[a:b], state, part(reset, a, b))
        loss = loss + loss_fn(y, a)
    loss.backward()
    for n in ref:
        assert rel_err(module.get_parameter(n).grad, ref[n]) < TOL, n
    spatial_ref = bptt_gradients(module, x, reset, loss_fn, spatial=True)
    module.learning = "spatial"
    got, _ = rtrl_over_segments(module, x, reset, loss_fn)
    for n in spatial_ref:
        assert rel_err(got[n], spatial_ref[n]) < TOL, n


def _states_with_weights(cell, x, reset, c0, weights):
    """``c (T, B, N)`` by autograd through ``cell.step`` with explicit recurrent weights."""
    p = F.linear(x, weights["cell.weight_ih"], weights["cell.bias"]).unflatten(-1, (cell.num_gates, cell.hidden_size))
    c, out = c0, []
    for t in range(x.shape[0]):
        if reset is not None:
            c = c * (~reset[t]).to(x.dtype)[:, None]
        c = cell.step(c, p[t], weights["cell.weight_hh"])
        out.append(c)
    return torch.stack(out)


def gradients_holding_each_segments_weights(module, x, reset, loss_fn, segments, weights):
    """For each segment ``k``: the gradient of its loss ``L_k`` when segment ``j`` ran with its own
    weights ``weights[j]``, summed over the copies: ``Σ_{j≤k} ∂L_k/∂θ_j`` (the readout's
    parameters reach ``L_k`` through copy ``k`` only)."""
    out = []
    for k, (a, b) in enumerate(segments):
        copies = [{n: weights[j][n].clone().requires_grad_(True) for n in RECURRENT} for j in range(k + 1)]
        c = module.initial_state(B, sensitivities=False).c
        for j, (s, e) in enumerate(segments[: k + 1]):
            cs = _states_with_weights(module.cell, x[s:e], part(reset, s, e), c, copies[j])
            c = cs[-1]
        with torch.no_grad():
            for n, q in module.named_parameters():
                q.copy_(weights[k][n])
        module.zero_grad()
        loss_fn(module._readout(x[a:b], cs), a).backward()
        grads = {n: q.grad.clone() for n, q in module.named_parameters() if n not in RECURRENT}
        grads.update({n: sum(cp[n].grad for cp in copies) for n in RECURRENT})
        out.append(grads)
    return out


@pytest.mark.parametrize("resets", ["none", "mask"])
def test_weights_changed_between_segments(cell_name, resets):
    """Online RTRL: the weights change after every segment. Each segment's RTRL gradient equals
    the gradient of its loss with respect to the weights of every segment it depends on."""
    module = make_module(cell_name, seed=2)
    x, reset, loss_fn = make_sequence(resets, seed=2)
    segments = [(0, 16), (16, 32), (32, 48), (48, 64)]  # a fixed unroll, as in online training
    g = torch.Generator().manual_seed(2)
    weights = [{n: q.detach().clone() for n, q in module.named_parameters()}]
    for _ in segments[1:]:  # a visible step each time: ±20 % of every weight, plus a little noise
        weights.append({n: w * (1 + 0.2 * torch.randn(w.shape, generator=g, dtype=w.dtype))
                        + 0.05 * torch.randn(w.shape, generator=g, dtype=w.dtype) for n, w in weights[-1].items()})
    ref = gradients_holding_each_segments_weights(module, x, reset, loss_fn, segments, weights)

    state = module.initial_state(B)
    for k, (a, b) in enumerate(segments):
        with torch.no_grad():
            for n, q in module.named_parameters():
                q.copy_(weights[k][n])
        module.zero_grad()
        y, state = module(x[a:b], state, part(reset, a, b))
        loss_fn(y, a).backward()
        for n, q in module.named_parameters():
            assert rel_err(q.grad, ref[k][n]) < TOL, (k, n)
    # the check can fail: pretending the last weights had run all along gives another gradient
    fixed = bptt_gradients(module, x, reset, lambda y, t0: loss_fn(y[48:], 48))
    assert rel_err(fixed["cell.weight_ih"], ref[-1]["cell.weight_ih"]) > 1e-3


# float32 against float64: measured worst relative error over the cells, parameters and resets on
# this 64-step problem: 8e-6 (float32's epsilon is 1.2e-7). 1e-4 leaves room for other BLAS builds
# and still catches a lost digit (a half-precision intermediate, a cancellation).
TOL_FLOAT32 = 1e-4


@pytest.mark.parametrize("resets", ["none", "mask"])
def test_float32_gradients_match_float64(cell_name, resets):
    # the diagonal cell's decay logits ν stay below 6 here (λ = σ(ν) < 0.9975, memories of ~400
    # steps): slower units lose float32 accuracy, see the next test
    module64 = make_module(cell_name, seed=3, scale=1.5 if cell_name == "diagonal" else 5.0)
    module32 = copy.deepcopy(module64).float()
    x, reset, loss_fn = make_sequence(resets, seed=3)
    ref, state64 = rtrl_over_segments(module64, x, reset, loss_fn)
    got, state32 = rtrl_over_segments(module32, x.float(), reset, lambda y, t0: loss_fn(y.double(), t0))
    for n in ref:
        assert got[n].dtype == torch.float32
        assert rel_err(got[n].double(), ref[n]) < TOL_FLOAT32, n
    assert rel_err(state32.c.to(state64.c.dtype), state64.c) < TOL_FLOAT32
    for field, s32, s64 in zip(state64.sensitivities._fields, state32.sensitivities, state64.sensitivities):
        assert rel_err(s32.to(s64.dtype), s64) < TOL_FLOAT32, field


def test_float32_lru_with_slow_units():
    """The LRU's slow units (|λ| within 1e-3 of 1, as its long-range settings use) in float32,
    where a cancellation would show: ``1 − |λ|²`` taken from ``|λ|`` itself loses 3 of float32's 7
    digits at |λ| = 0.99999 (planted: this test fails). Measured: 2.7e-5."""
    torch.manual_seed(4)
    module64 = MODULES["lru"](D, N, r_min=0.999, r_max=0.99999).double()
    module32 = copy.deepcopy(module64).float()
    x, reset, loss_fn = make_sequence("none", seed=3)
    ref, state64 = rtrl_over_segments(module64, x, reset, loss_fn)
    got, state32 = rtrl_over_segments(module32, x.float(), reset, lambda y, t0: loss_fn(y.double(), t0))
    assert rel_err(state32.c.to(state64.c.dtype), state64.c) < TOL_FLOAT32
    for n in ref:
        assert rel_err(got[n].double(), ref[n]) < TOL_FLOAT32, n


def test_float32_diagonal_cell_with_very_slow_units():
    module64 = make_module("diagonal", seed=3, scale=1.0)
    with torch.no_grad():
        module64.cell.weight_hh.copy_(torch.tensor([[4.0, 8.0, 12.0, 16.0]]))
    module32 = copy.deepcopy(module64).float()
    x, reset, loss_fn = make_sequence("none", seed=3)
    ref, state64 = rtrl_over_segments(module64, x, reset, loss_fn)
    got, state32 = rtrl_over_segments(module32, x.float(), reset, lambda y, t0: loss_fn(y.double(), t0))
    assert rel_err(state32.c.double(), state64.c) < TOL_FLOAT32
    for n in ref:
        assert rel_err(got[n].double(), ref[n]) < TOL_FLOAT32, n


def test_exact_rtrl_called_directly(cell_name):
    """The function API below the modules, with its defaults (``through_time=True``): segment by
    segment it gives the full BPTT gradient of the cell's own states, and it refuses sensitivities
    under the spatial rule."""
    module = make_module(cell_name, seed=5)
    cell = module.cell
    x, reset, _ = make_sequence("mask", seed=5)
    target = torch.randn(T, B, module.state_size, dtype=torch.float64)
    loss_fn = lambda c, t0: (torch.view_as_real(c) if c.is_complex() else c).pow(3).sum() + (  # noqa: E731
        c.real * target[t0 : t0 + c.shape[0]]).sum()
    cell.zero_grad()
    loss_fn(unrolled_states(module, x, reset, module.initial_state(B, sensitivities=False).c), 0).backward()
    ref = {n: q.grad.clone() for n, q in cell.named_parameters()}
    cell.zero_grad()
    c0, sens = module.initial_state(B).c, Sensitivities.zeros(cell, B)
    for a, b in SEGMENTS:
        keep = (~reset[a:b]).to(x.dtype)
        p = F.linear(x[a:b], cell.weight_ih, cell.bias).unflatten(-1, (cell.num_gates, cell.hidden_size))
        c, sens = exact_rtrl(cell, x[a:b], p, c0, keep, sens)
        loss_fn(c, a).backward()
        c0 = c[-1].detach()
    for n, q in cell.named_parameters():
        assert rel_err(q.grad, ref[n]) < TOL, n
    with pytest.raises(ValueError, match=r"^the spatial rule \(through_time=False\) carries no sensitivities$"):
        exact_rtrl(cell, x[:2], p[:2], c0, None, sens, through_time=False)
