"""The engine's speed measures: subnormal-free carry factors and recycled sensitivity blocks.

Neither may change a result beyond rounding or touch memory that anyone still holds.
"""

from __future__ import annotations

import pytest
import torch
from oracles import bptt_gradients, random_sequence, rel_err

import rtrl.exact
from rtrl.exact import _carry_factors, _flush_floor
from rtrl.nn import MODULES
from rtrl.recycle import Recycler

T, B, D, N = 30, 3, 5, 4


@pytest.fixture(params=sorted(MODULES))
def cell_name(request):
    return request.param


def _subnormal(t: torch.Tensor) -> bool:
    r = torch.view_as_real(t) if t.is_complex() else t
    return bool(((r != 0) & (r.abs() < torch.finfo(r.dtype).tiny)).any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64, torch.float64])
@pytest.mark.parametrize("lti", [False, True])
def test_carry_factors_are_flushed_products(dtype, lti):
    torch.manual_seed(0)
    steps = 200  # long enough that products of |a| ~ 0.3 underflow through the subnormals
    if lti:
        a = (0.3 * torch.rand(D, dtype=dtype) + 0.1).expand(steps, B, D)
    else:
        a = 0.3 * torch.rand(steps, B, D, dtype=dtype) + 0.1
    keep = (torch.rand(steps, B) > 0.02).to(a.real.dtype)
    a_kept = a * keep[:, :, None]
    lam, lam0 = _carry_factors(a, keep, a_kept)
    assert not _subnormal(lam) and not _subnormal(lam0)
    # the same products in float64 without flushing: equal up to rounding and the floor
    ref = torch.ones(B, D, dtype=torch.complex128 if dtype.is_complex else torch.float64)
    tol = {"rtol": 1e-12 if dtype == torch.float64 else 1e-4, "atol": 2 * _flush_floor(dtype)}
    for t in range(steps - 1, -1, -1):
        assert torch.allclose(lam[t].expand(B, D).to(ref.dtype), ref, **tol)
        ref = ref * a_kept[t].to(ref.dtype)
    assert torch.allclose(lam0.expand(B, D).to(ref.dtype), ref, **tol)
    assert (ref.abs() < 1e-30).any()  # the test reached the range where flushing happens


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_flush_floor_keeps_products_normal_and_flushes_no_more(dtype):
    """The floor's two duties (see :func:`rtrl.exact._flush_floor`): a factor at the floor times any
    ``|a| >= eps²`` is still normal, and nothing above that is flushed: the smallest such floor."""
    info = torch.finfo(dtype)
    floor = torch.tensor(_flush_floor(dtype), dtype=dtype)
    assert floor * info.eps ** 2 >= info.tiny
    assert floor * 0.99 * info.eps ** 2 < info.tiny  # a lower floor would break the first duty


def test_streams_summed_in_groups_equal_bptt(monkeypatch, cell_name):
    """The carry-in sums the streams a cache-sized group at a time: with one stream a group (7 groups
    of streams, more streams than rows of a block) the gradient is still exactly BPTT's."""
    monkeypatch.setattr(rtrl.exact, "_CHUNK_BYTES", 1)
    torch.manual_seed(3)
    batch = 7
    m = MODULES[cell_name](2, N).double()
    x, reset, loss_fn = random_sequence(20, batch, 2, N, boundary=8)
    ref = bptt_gradients(m, x, reset, loss_fn)
    m.zero_grad()
    state = m.initial_state(batch)
    for a, b in ((0, 8), (8, 13), (13, 20)):
        y, state = m(x[a:b], state, reset[a:b])
        loss_fn(y, a).backward()
    for n, q in m.named_parameters():
        assert rel_err(q.grad, ref[n]) < 1e-9, n


@pytest.mark.parametrize("batch, segment", [(1, 2), (2, 1)])
def test_one_stream_or_one_step_segments_equal_bptt(cell_name, batch, segment):
    """Shapes where a dense ``(T, B, N)`` factor could pass for a shared one: T or B of 1 or 2."""
    torch.manual_seed(4)
    m = MODULES[cell_name](D, N).double()
    x = torch.randn(6, batch, D, dtype=torch.float64)
    reset = torch.zeros(6, batch, dtype=torch.bool)
    reset[3, 0] = True
    target = torch.randn(6, batch, N, dtype=torch.float64)

    def loss_fn(y, t0):
        return ((y - target[t0:t0 + y.shape[0]]) ** 2).sum() + (y ** 3).sum()

    ref = bptt_gradients(m, x, reset, loss_fn)
    m.zero_grad()
    state = m.initial_state(batch)
    for a in range(0, 6, segment):
        y, state = m(x[a:a + segment], state, reset[a:a + segment])
        loss_fn(y, a).backward()
    for n, q in m.named_parameters():
        assert rel_err(q.grad, ref[n]) < 1e-9, n


def test_float32_agrees_with_float64(cell_name):
    """With subnormal carry factors flushed, float32 RTRL over many segments still matches float64."""
    torch.manual_seed(1)
    m64 = MODULES[cell_name](D, 2 * N).double()
    m32 = MODULES[cell_name](D, 2 * N)
    m32.load_state_dict(m64.state_dict())
    x = torch.randn(150, B, D, dtype=torch.float64)
    reset = torch.rand(150, B) < 0.02
    grads = []
    for m, dtype in ((m64, torch.float64), (m32, torch.float32)):
        state = m.initial_state(B)
        for a in range(0, 150, 50):
            y, state = m(x[a:a + 50].to(dtype), state, reset[a:a + 50])
            (y ** 2).sum().backward()
        grads.append([q.grad.double() for q in m.parameters()] + [s.to(torch.complex128) for s in state.sensitivities])
    for g64, g32 in zip(*grads):
        assert ((g32 - g64).abs().max() / g64.abs().max()).item() < 1e-4


def test_recycled_blocks_never_overwrite_what_is_held(cell_name):
    """States the user keeps (whole or as a view) are never the block a later segment writes."""
    torch.manual_seed(2)
    m = MODULES[cell_name](D, 2 * N)
    x = torch.randn(40, B, D)
    state = m.initial_state(B)
    kept = []
    for i, a in enumerate(range(0, 40, 5)):
        y, state = m(x[a:a + 5], state)
        (y ** 2).sum().backward()
        if i % 3 == 0:  # some states kept whole, one as a view only
            kept.append((state.sensitivities.weight_ih, state.sensitivities.weight_ih.clone()))
        if i == 4:
            view = state.sensitivities.weight_ih[1:]
            kept.append((view, view.clone()))
    for held, copy in kept:
        assert torch.equal(held, copy)


def test_recycler_reuses_only_free_blocks():
    r = Recycler(capacity=2)
    cpu = torch.device("cpu")
    a = r.empty((4, 5), torch.float32, cpu)
    b = r.empty((4, 5), torch.float32, cpu)
    assert a.data_ptr() != b.data_ptr()  # a is held: not reused
    ptr = a.data_ptr()
    del a
    c = r.empty((2, 10), torch.float32, cpu)  # the same number of bytes, now free
    assert c.data_ptr() == ptr and c.shape == (2, 10)
    d = r.empty((3,), torch.complex64, cpu)  # no free block of that size: a fresh one
    assert d.data_ptr() not in (ptr, b.data_ptr())
