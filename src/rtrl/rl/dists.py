"""The two action distributions of the agent's policy head, written once for R2AC, PPO and export.

The policy head outputs the distribution's *parameters* (what rollouts store as ``logits``):

* discrete actions: the ``A`` logits of a categorical distribution;
* continuous actions (a ``Box`` of size ``A``): ``2A`` numbers ``[mean; log_std]`` of a diagonal
  Gaussian. The mean is a linear function of the core's output; the log-std is a learned vector
  that does not depend on the state (one per action dimension, initialised to 0).

Why a state-independent log-std: it is the standard for on-policy actor-critics (PPO, A2C, the RTU
paper's PPO) and it cannot collapse or explode on one state's gradient; a learned state-dependent
std is what off-policy max-entropy methods (SAC) need, not these. Why clipping rather than tanh
squashing: the Gaussian's density of the sampled action is exact and closed-form, and so is its
entropy, so V-trace's ratio ``π(a)/μ(a)`` and PPO's ratio are exact density ratios; the env adapter
clips the action into ``[-1, 1]`` and maps it onto the env's bounds (the clip is part of the
environment, the agent is trained on the unclipped draw, as in cleanrl and Stable-Baselines3's PPO).
A tanh squash would need the log-det correction ``Σ log(1 − tanh²u)`` on stored pre-squash draws and
has no closed-form entropy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


def log_prob(params: Tensor, action: Tensor, continuous: bool) -> Tensor:
    """``log π(action)`` for parameters ``(..., A)`` (categorical) or ``(..., 2A)`` (Gaussian) and
    actions ``(...)`` int or ``(..., A)`` float; returns ``(...)``."""
    if not continuous:
        return F.log_softmax(params, -1).gather(-1, action[..., None]).squeeze(-1)
    mean, log_std = params.chunk(2, -1)
    z = (action.to(mean.dtype) - mean) * torch.exp(-log_std)
    return (-0.5 * z * z - log_std - 0.5 * LOG_2PI).sum(-1)


def entropy(params: Tensor, continuous: bool) -> Tensor:
    """The distribution's entropy, ``(...)``: ``−Σ p log p`` or ``Σ_i (log σ_i + ½ log 2πe)``."""
    if not continuous:
        logp = F.log_softmax(params, -1)
        return -(logp.exp() * logp).sum(-1)
    _, log_std = params.chunk(2, -1)
    return (log_std + 0.5 * (1.0 + LOG_2PI)).sum(-1)


def sample(params: Tensor, continuous: bool, greedy: bool = False) -> Tensor:
    """A draw (``greedy``: the mode). Categorical draws are Gumbel-max: ``argmax(logits + g)`` with
    ``g`` standard Gumbel noise is a draw from ``softmax(logits)``, without normalising."""
    if not continuous:
        if greedy:
            return params.argmax(-1)
        gumbel = torch.rand_like(params).log_().neg_().log_().neg_()
        return (params + gumbel).argmax(-1)
    mean, log_std = params.chunk(2, -1)
    if greedy:
        return mean
    return mean + torch.exp(log_std) * torch.randn_like(mean)
