"""Two stacked element-wise layers: what the hybrid's gradient is, exactly, and the exact 2-layer reference.

float64, several segments with resets, against autograd through the whole sequence:

* hybrid (``TwoLayer(learning="rtrl")``): the top layer's gradients are full BPTT's; the bottom
  layer's are, segment by segment, BPTT of that segment's loss from both states detached at its start;
* ``learning="bptt"``: carrying the state undetached is full BPTT of both layers;
* :func:`rtrl.multilayer.two_layer_rtrl` (exact RTRL of both layers) is full BPTT of both.
"""

from __future__ import annotations

import copy

import pytest
import torch

from rtrl.multilayer import two_layer_rtrl
from rtrl.nn import TwoLayer

T, B, D, N = 11, 3, 4, 5
SEGMENTS = (4, 5, 2)


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    reset = torch.rand(T, B, generator=g) < 0.15
    reset[0] = True
    reset[6, 0] = False  # at least one stream runs across the segment boundaries
    reset[4:9, 0] = False
    w = torch.randn(T, B, N, generator=g, dtype=torch.float64)  # loss = Σ_t w_t · y_t
    return x, reset, w


def _model(layer: str, learning: str) -> TwoLayer:
    torch.manual_seed(1)
    return TwoLayer(layer, D, N, learning=learning, bottom_size=N + 1).double()


def _grads(m: TwoLayer, prefix: str) -> dict[str, torch.Tensor]:
    return {n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
            for n, p in m.named_parameters() if n.startswith(prefix)}


def _full_bptt(ref: TwoLayer, x, reset, w) -> None:
    ref.zero_grad()
    y, _ = ref(x, ref.initial_state(B), reset)
    (w * y).sum().backward()


def _segments():
    start = 0
    for length in SEGMENTS:
        yield slice(start, start + length)
        start += length


@pytest.mark.parametrize("layer", ["elstm", "lru"])
def test_hybrid_top_is_full_bptt_and_bottom_is_bptt_within_each_segment(layer):
    x, reset, w = _data()
    hybrid = _model(layer, "rtrl")
    state = hybrid.initial_state(B)
    for s in _segments():
        y, state = hybrid(x[s], state, reset[s])
        (w[s] * y).sum().backward()  # gradients add up over the segments, weights fixed

    ref = copy.deepcopy(hybrid)
    ref.learning = ref.top.learning = "bptt"
    _full_bptt(ref, x, reset, w)
    full_top, full_bottom = _grads(ref, "top"), _grads(ref, "bottom")
    for name, g in _grads(hybrid, "top").items():
        torch.testing.assert_close(g, full_top[name], msg=f"top: {name} is not the full BPTT gradient")

    # the bottom layer: per segment, BPTT of that segment's loss from the detached states at its start
    ref.zero_grad()
    state = ref.initial_state(B)
    for s in _segments():
        y, state = ref(x[s], state.detach(), reset[s])
        (w[s] * y).sum().backward()
    for name, g in _grads(hybrid, "bottom").items():
        torch.testing.assert_close(g, ref.get_parameter(name).grad, msg=f"bottom: {name}")
    # and that is not full BPTT (the test would not tell a broken carry otherwise)
    assert max((g - full_bottom[n]).abs().max() for n, g in _grads(hybrid, "bottom").items()) > 1e-4


def test_both_bptt_carried_across_segments_is_full_bptt():
    x, reset, w = _data(2)
    m = _model("elstm", "bptt")
    state, total = m.initial_state(B), 0.0
    for s in _segments():
        y, state = m(x[s], state, reset[s])
        total = total + (w[s] * y).sum()
    total.backward()
    carried = _grads(m, "")
    ref = copy.deepcopy(m)
    _full_bptt(ref, x, reset, w)
    for name, g in carried.items():
        torch.testing.assert_close(g, ref.get_parameter(name).grad, msg=name)


def test_exact_two_layer_rtrl_is_full_bptt_of_both_layers():
    x, reset, w = _data(3)
    m = _model("elstm", "bptt")
    ref = copy.deepcopy(m)
    _full_bptt(ref, x, reset, w)
    # two calls carry the state and the sensitivities across a boundary
    y1, state, sens = two_layer_rtrl(m, x[:6], lambda t, y: (w[t] * y).sum(), reset[:6])
    y2, _, _ = two_layer_rtrl(m, x[6:], lambda t, y: (w[6 + t] * y).sum(), reset[6:], state, sens)
    y_ref, _ = ref(x, ref.initial_state(B), reset)
    torch.testing.assert_close(torch.cat((y1, y2)), y_ref.detach())
    for name, p in m.named_parameters():
        torch.testing.assert_close(p.grad, ref.get_parameter(name).grad, msg=name)
    blocks = sens.bytes_per_stream()  # the dense block dc²/dθ¹ dominates even at this size
    assert blocks["dense"] > blocks["own1"] + blocks["own2"]


def test_two_layer_rejects_bad_input_with_one_line():
    m = TwoLayer("elstm", D, N)
    with pytest.raises(ValueError, match="learning must be one of"):
        TwoLayer("elstm", D, N, learning="spatial")
    with pytest.raises(ValueError, match="unknown layer"):
        TwoLayer("gru", D, N)
    with pytest.raises(ValueError, match=r"state.c has shape \(2, 5\) but TwoLayer needs \(B, 10\)"):
        m(torch.zeros(3, 2, D), m.top.initial_state(2))
    with pytest.raises(ValueError, match="covers real cells"):
        two_layer_rtrl(TwoLayer("lru", D, N), torch.zeros(2, 1, D), lambda t, y: y.sum())
