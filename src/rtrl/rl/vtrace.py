"""V-trace targets (Espeholt et al., 2018) and the IMPALA actor-critic loss.

Time-major tensors: ``T`` transitions of ``B`` streams. ``discounts[t] = γ·(1 − done)`` of the
transition from step ``t`` to ``t+1``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from rtrl.rl import dists


class VTraceReturns(NamedTuple):
    vs: Tensor  # (T, B) value targets
    pg_advantages: Tensor  # (T, B)


def vtrace(
    log_rhos: Tensor,
    discounts: Tensor,
    rewards: Tensor,
    values: Tensor,
    bootstrap_value: Tensor,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
) -> VTraceReturns:
    """V-trace with truncation levels ``rho_bar`` (and the same for the policy gradient) and ``c_bar``.

    Args: ``log_rhos`` ``(T, B)`` = log π(a)/μ(a); ``discounts``, ``rewards``, ``values`` ``(T, B)``;
    ``bootstrap_value`` ``(B,)`` = V(x_T).
    """
    with torch.no_grad():  # targets, not a graph (a decorator would hide the body from mutation testing)
        rhos = log_rhos.exp()
        clipped_rhos = rhos.clamp(max=rho_bar)
        cs = rhos.clamp(max=c_bar)
        next_values = torch.cat((values[1:], bootstrap_value[None]), 0)
        deltas = clipped_rhos * (rewards + discounts * next_values - values)
        acc = torch.zeros_like(bootstrap_value)
        vs_minus_v = torch.empty_like(values)
        for t in range(values.shape[0] - 1, -1, -1):
            acc = deltas[t] + discounts[t] * cs[t] * acc
            vs_minus_v[t] = acc
        vs = vs_minus_v + values
        next_vs = torch.cat((vs[1:], bootstrap_value[None]), 0)
        pg_advantages = clipped_rhos * (rewards + discounts * next_vs - values)
        return VTraceReturns(vs, pg_advantages)


class Losses(NamedTuple):
    total: Tensor
    policy: Tensor
    value: Tensor
    entropy: Tensor  # the entropy term as added to the loss (negative entropy times its weight)


def actor_critic_loss(
    logits: Tensor,
    values: Tensor,
    actions: Tensor,
    behaviour_logits: Tensor,
    rewards: Tensor,
    discounts: Tensor,
    bootstrap_value: Tensor,
    value_weight: float = 0.5,
    entropy_weight: float = 0.01,
    continuous: bool = False,
) -> Losses:
    """IMPALA's loss, summed over time and batch as the paper's code does.

    ``logits``/``behaviour_logits`` ``(T, B, A)``, ``values`` ``(T, B)`` (with grad), ``actions``
    ``(T, B)``, ``rewards``/``discounts`` ``(T, B)``, ``bootstrap_value`` ``(B,)``.
    policy = −Σ log π(a)·A_vtrace;  value = ½ Σ (v_s − V)²;  entropy = Σ π log π.

    ``continuous=True``: ``logits``/``behaviour_logits`` are Gaussian parameters ``[mean; log_std]``
    ``(T, B, 2A)`` and ``actions`` ``(T, B, A)``; the importance ratio is the density ratio
    ``log π(a) − log μ(a)`` (summed over the action's dimensions) and the entropy term is minus the
    Gaussian's entropy (:mod:`rtrl.rl.dists`).
    """
    if continuous:
        logp_a = dists.log_prob(logits, actions, True)
        log_mu_a = dists.log_prob(behaviour_logits, actions, True)
        entropy = -dists.entropy(logits, True).sum()
    else:
        logp = F.log_softmax(logits, -1)
        logp_a = logp.gather(-1, actions[..., None]).squeeze(-1)
        log_mu_a = F.log_softmax(behaviour_logits, -1).gather(-1, actions[..., None]).squeeze(-1)
        entropy = (logp.exp() * logp).sum()
    targets = vtrace(logp_a.detach() - log_mu_a, discounts, rewards, values.detach(), bootstrap_value.detach())
    policy = -(logp_a * targets.pg_advantages).sum()
    value = 0.5 * ((targets.vs - values) ** 2).sum()
    total = policy + value_weight * value + entropy_weight * entropy
    return Losses(total, policy, value, entropy_weight * entropy)
