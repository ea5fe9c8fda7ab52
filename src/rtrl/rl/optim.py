"""RMSProp and Adam for the RL learners, with the linear learning-rate decay built in.

The update rules are torch.optim's own (``RMSprop`` without momentum or centring, ``Adam``
without AMSGrad; ``tests/test_optim.py`` checks them equal to torch.optim in float64), written
here because constructing any ``torch.optim`` optimizer first imports ``torch._dynamo``: 0.9–1.4 s
on our machines, a sixth of a short training run. ``state_dict`` keeps torch.optim's layout, so
checkpoints written with either load into both.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor


class _Optimizer:
    """Parameters, a base learning rate, the decay ``lr(u) = base_lr · max(0, 1 − u / total)``
    over ``total`` updates (constant when ``total`` is 0), and per-parameter state."""

    hyper: tuple[str, ...] = ()  # the keys of param_groups[0] besides lr (for state_dict)

    def __init__(self, params: Iterable[Tensor], lr: float, total_updates: int = 0) -> None:
        self.params = list(params)  # frozen ones too (they never get a gradient), as torch.optim keeps them
        if not self.params:
            raise ValueError("the optimizer got an empty parameter list")
        self.base_lr, self.total_updates, self.updates = lr, total_updates, 0
        self.state: list[dict[str, Tensor]] = [self._init_state(p) for p in self.params]

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        if self.total_updates <= 0:
            return self.base_lr
        return self.base_lr * max(0.0, 1 - self.updates / self.total_updates)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Apply the gradients in ``.grad`` at the current learning rate (parameters without one
        are left alone). The schedule moves on only with :meth:`advance`."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if live:
            self._update([self.params[i] for i in live], [self.params[i].grad for i in live],
                         [self.state[i] for i in live], self.lr)

    def advance(self) -> None:
        """One more update (R2AC) or iteration (PPO: several steps) done: the rate decays a notch."""
        self.updates += 1

    def _init_state(self, p: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def _update(self, params: list[Tensor], grads: list[Tensor], states: list[dict[str, Tensor]], lr: float) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """torch.optim's layout: ``{"state": {i: {...}}, "param_groups": [{...}]}``, plus the decay."""
        group = dict(lr=self.lr, initial_lr=self.base_lr, params=list(range(len(self.params))),
                     **{k: getattr(self, k) for k in self.hyper})
        return dict(state={i: {k: v.clone() for k, v in s.items()} for i, s in enumerate(self.state)},
                    param_groups=[group], updates=self.updates, total_updates=self.total_updates)

    def load_state_dict(self, d: dict, scheduler: dict | None = None) -> None:
        """Load :meth:`state_dict`'s output, or a torch.optim optimizer's state dict together with its
        ``LambdaLR`` scheduler's (whose ``last_epoch`` counts the updates done)."""
        if len(d["param_groups"][0]["params"]) != len(self.params):
            raise ValueError(f"the saved optimizer has {len(d['param_groups'][0]['params'])} parameters, "
                             f"this one {len(self.params)}: the checkpoint is of another model")
        for i, s in enumerate(self.state):
            saved = d["state"].get(i, d["state"].get(str(i)))
            if saved is None:  # torch.optim has no state for a parameter that never had a gradient
                continue
            for k, v in s.items():
                v.copy_(saved[k])
        if "updates" in d:
            self.updates = int(d["updates"])
        elif scheduler is not None:
            self.updates = int(scheduler["last_epoch"])


class RMSprop(_Optimizer):
    """``v ← α v + (1 − α) g²;  θ ← θ − lr · g / (√v + ε)`` (torch.optim.RMSprop's rule: ε outside the root)."""

    hyper = ("alpha", "eps")

    def __init__(self, params: Iterable[Tensor], lr: float, alpha: float = 0.99, eps: float = 1e-8,
                 total_updates: int = 0) -> None:
        self.alpha, self.eps = alpha, eps
        super().__init__(params, lr, total_updates)

    def _init_state(self, p: Tensor) -> dict[str, Tensor]:
        return dict(step=torch.zeros((), dtype=torch.float32), square_avg=torch.zeros_like(p))

    def _update(self, params, grads, states, lr) -> None:
        sq = [s["square_avg"] for s in states]
        for s in states:
            s["step"] += 1
        torch._foreach_mul_(sq, self.alpha)
        torch._foreach_addcmul_(sq, grads, grads, value=1 - self.alpha)
        avg = torch._foreach_sqrt(sq)
        torch._foreach_add_(avg, self.eps)
        torch._foreach_addcdiv_(params, grads, avg, value=-lr)


class Adam(_Optimizer):
    """torch.optim.Adam's rule: moments ``m``, ``v`` with bias corrections, ``θ ← θ − lr · m̂ / (√v̂ + ε)``."""

    hyper = ("betas", "eps")

    def __init__(self, params: Iterable[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, total_updates: int = 0) -> None:
        self.betas, self.eps = tuple(betas), eps
        super().__init__(params, lr, total_updates)

    def _init_state(self, p: Tensor) -> dict[str, Tensor]:
        return dict(step=torch.zeros((), dtype=torch.float32), exp_avg=torch.zeros_like(p),
                    exp_avg_sq=torch.zeros_like(p))

    def _update(self, params, grads, states, lr) -> None:
        for s in states:
            s["step"] += 1
        steps = {float(s["step"]) for s in states}
        if len(steps) > 1:  # parameters that missed gradients lag behind: their own bias corrections
            for p, g, s in zip(params, grads, states):
                self._adam(p, g, s, lr, float(s["step"]))
            return
        self._adam(params, grads, states, lr, steps.pop())

    def _adam(self, params, grads, states, lr: float, step: float) -> None:
        if isinstance(params, Tensor):
            params, grads, states = [params], [grads], [states]
        beta1, beta2 = self.betas
        m, v = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, math.sqrt(1 - beta2**step))
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, m, denom, value=-lr / (1 - beta1**step))


@torch.no_grad()
def clip_grad_norm(params: Iterable[Tensor], max_norm: float) -> Tensor:
    """``torch.nn.utils.clip_grad_norm_`` for parameters of one device and dtype: scale the gradients in
    place so that their global L2 norm is at most ``max_norm``; returns the norm before clipping (NaN or
    Inf when a gradient holds one, the gradients then scaled by NaN or 0, as torch's does). Without
    torch's grouping by device and dtype, which costs a sixth of a small PPO minibatch step."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, (max_norm / (norm + 1e-6)).clamp(max=1.0))
    return norm


def make_optimizer(name: str, params: Iterable[Tensor], lr: float, total_updates: int = 0, *,
                   rms_alpha: float = 0.99, rms_eps: float = 0.01, adam_eps: float = 1e-8) -> _Optimizer:
    """``"rmsprop"`` or ``"adam"``, with a linear decay over ``total_updates`` (0: constant)."""
    if name == "rmsprop":
        return RMSprop(params, lr, alpha=rms_alpha, eps=rms_eps, total_updates=total_updates)
    if name == "adam":
        return Adam(params, lr, eps=adam_eps, total_updates=total_updates)
    raise ValueError(f"unknown optimizer {name!r}; choose 'rmsprop' or 'adam'")
