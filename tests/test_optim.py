"""The learners' RMSProp and Adam against torch.optim's, their checkpoints in both directions, and the gradient clip."""

from __future__ import annotations

import pytest
import torch

from rtrl.rl.optim import Adam, RMSprop, clip_grad_norm


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)]
    grads = [[torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params] for _ in range(6)]
    return params, grads




@pytest.mark.parametrize("kind", ["rmsprop", "adam"])
def test_same_steps_as_torch_optim_with_linear_decay(kind):
    total = 5
    mine_p, grads = _problem()
    ref_p = [p.clone().requires_grad_(True) for p in mine_p]
    mine_p = [p.clone().requires_grad_(True) for p in mine_p]
    if kind == "rmsprop":
        mine = RMSprop(mine_p, lr=0.1, alpha=0.9, eps=0.01, total_updates=total)
        ref = torch.optim.RMSprop(ref_p, lr=0.1, alpha=0.9, eps=0.01)
    else:
        mine = Adam(mine_p, lr=0.1, betas=(0.8, 0.95), eps=1e-5, total_updates=total)
        ref = torch.optim.Adam(ref_p, lr=0.1, betas=(0.8, 0.95), eps=1e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(ref, lambda u: max(0.0, 1 - u / total))
    for gs in grads:  # 6 updates: the last at learning rate 0
        for p, q, g in zip(mine_p, ref_p, gs):
            p.grad, q.grad = g.clone(), g.clone()
        assert mine.lr == pytest.approx(ref.param_groups[0]["lr"], abs=1e-15)
        mine.step()
        mine.advance()
        ref.step()
        sched.step()
    for p, q in zip(mine_p, ref_p):
        assert torch.allclose(p, q, rtol=0, atol=1e-14)
    # a torch.optim checkpoint (optimizer + scheduler) resumes in ours, and ours in torch's
    other = (RMSprop if kind == "rmsprop" else Adam)([p.detach().clone() for p in mine_p], lr=0.1, total_updates=total)
    other.load_state_dict(ref.state_dict(), sched.state_dict())
    assert other.updates == 6 and other.lr == 0.0
    for a, b in zip(other.state, mine.state):
        assert all(torch.equal(a[k], b[k]) for k in a)
    fresh = type(ref)([q.detach().clone() for q in ref_p], lr=0.1)
    fresh.load_state_dict({k: v for k, v in mine.state_dict().items() if k in ("state", "param_groups")})
    assert all(torch.equal(fresh.state[q][k], mine.state[i][k]) for i, q in enumerate(fresh.param_groups[0]["params"])
               for k in mine.state[i])


def test_a_parameter_without_gradient_is_left_alone():
    a, b = torch.zeros(3, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = Adam([a, b], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b, torch.ones(2)) and (a < 0).all()
    assert float(opt.state[1]["step"]) == 0 and float(opt.state[0]["step"]) == 1


def test_a_checkpoint_of_another_model_is_refused():
    opt = RMSprop([torch.zeros(2, requires_grad=True)], lr=0.1)
    other = RMSprop([torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="another model"):
        opt.load_state_dict(other.state_dict())


@pytest.mark.parametrize("max_norm", [1e-3, 0.5, 1e6])
def test_clip_grad_norm_equals_torch(max_norm):
    """Our clip (PPO's and R2AC's, without torch's grouping overhead) returns torch's norm and leaves
    torch's gradients, clipped or not; a parameter without a gradient is skipped; NaN passes through."""
    g = torch.Generator().manual_seed(0)
    make = lambda: [torch.nn.Parameter(torch.randn(*s, generator=g, dtype=torch.float64)) for s in ((3, 4), (5,), (2,))]  # noqa: E731
    ours, ref = make(), make()
    for a, b in zip(ours, ref):
        b.data.copy_(a.data)
    for params in (ours, ref):
        loss = sum((p ** 3).sum() for p in params[:2])  # the last parameter gets no gradient
        loss.backward()
    norm = clip_grad_norm(ours, max_norm)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, max_norm)
    torch.testing.assert_close(norm, ref_norm)
    for a, b in zip(ours, ref):
        assert (a.grad is None) == (b.grad is None)
        if a.grad is not None:
            torch.testing.assert_close(a.grad, b.grad)
    ours[0].grad[0, 0] = float("nan")
    assert torch.isnan(clip_grad_norm(ours, max_norm))
