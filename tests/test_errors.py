"""Bad input gets an error that names the problem and the fix."""

from __future__ import annotations

import pytest
import torch

from rtrl.nn import ELSTM

D, N, B, T = 3, 4, 2, 5


@pytest.fixture
def m():
    torch.manual_seed(0)
    return ELSTM(D, N)


def x(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


@pytest.mark.parametrize(
    "shape, match",
    [((B, D), r"shape \(T, B, input_size\)"), ((T, B, D + 1), "input_size=3"), ((0, B, D), "empty")],
)
def test_wrong_input_shape(m, shape, match):
    with pytest.raises(ValueError, match=match):
        m(x(*shape), m.initial_state(shape[1] if len(shape) == 3 else B))


def test_batch_mismatch_between_state_and_input(m):
    with pytest.raises(ValueError, match="same streams"):
        m(x(T, B, D), m.initial_state(B + 1))


def test_sensitivity_shape_mismatch(m):
    state = m.initial_state(B)
    bad = state._replace(sensitivities=state.sensitivities._replace(weight_ih=torch.zeros(B, D + 1, 2 * N)))
    with pytest.raises(ValueError, match="sensitivities.weight_ih"):
        m(x(T, B, D), bad)


def test_dtype_mismatch(m):
    with pytest.raises(ValueError, match=r"\.to\(\)"):
        m(x(T, B, D, dtype=torch.float64), m.initial_state(B))
    with pytest.raises(ValueError, match="state is torch.float64"):
        m(x(T, B, D), m.initial_state(B, dtype=torch.float64))


def test_device_mismatch(m):
    with pytest.raises(ValueError, match="meta"):
        m(x(T, B, D), m.initial_state(B, device="meta"))


@pytest.mark.parametrize("reset", [torch.zeros(T, B + 1, dtype=torch.bool), torch.zeros(T, B), torch.zeros(B, dtype=torch.bool)])
def test_bad_reset_mask(m, reset):
    with pytest.raises(ValueError, match="reset"):
        m(x(T, B, D), m.initial_state(B), reset)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input(m, bad):
    inp = x(T, B, D)
    inp[2, 1, 0] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        m(inp, m.initial_state(B))


def test_rtrl_without_sensitivities_refuses_to_train(m):
    with pytest.raises(ValueError, match="needs sensitivities"):
        m(x(T, B, D), m.initial_state(B, sensitivities=False))


def test_sensitivities_given_to_a_bptt_layer(m):
    bptt = ELSTM(D, N, learning="bptt")
    with pytest.raises(ValueError, match="learns by 'bptt'"):
        bptt(x(T, B, D), m.initial_state(B))


def test_not_a_state(m):
    with pytest.raises(TypeError, match="RecurrentState"):
        m(x(T, B, D), torch.zeros(B, N))


@pytest.mark.parametrize("kw", [dict(learning="tbptt"), dict(hidden_size=0)])
def test_bad_constructor_arguments(kw):
    args = dict(input_size=D, hidden_size=N) | kw
    with pytest.raises(ValueError, match="learning must be one of|must be positive"):
        ELSTM(**args)
