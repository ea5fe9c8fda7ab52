"""PPO whose recurrent core can learn by exact RTRL (``rtrl train --algo ppo``).

One iteration, for ``B`` envs and rollouts of ``T`` steps (``--unroll``):

1. **Rollout.** Every env steps ``T`` times with the current weights θ. We keep the observations,
   the previous rewards, ``done``, the actions, ``log π_θ(a)`` and ``V_θ``, plus ``V_θ`` of the
   observation after the last step (the bootstrap), and the core's state *before* the rollout:
   ``c_0`` and, for an RTRL core, its sensitivities ``S_0 = dc_0/dθ``.
2. **Advantages.** GAE(λ) from the rollout's own values, once; they stay fixed for all epochs.
3. **Epochs.** ``ppo_epochs`` times: the envs are shuffled and split into ``ppo_minibatches``
   groups (by env, never by time, so each env's segment stays whole); each group's segment is
   re-run from its stored ``(c_0, S_0)`` with the current weights, and one Adam step is taken on
   the clipped surrogate, the (clipped) value loss and the entropy bonus. An RTRL core adds the
   carry-in term ``∂L/∂c_0 · S_0`` to its gradient, so the gradient reaches back across every
   earlier rollout of the episode, not only into this segment.
4. **Carry.** The segment is re-run once more with the *final* weights, without parameter
   gradients (the exact-RTRL forward still computes the carried-out sensitivities). Its end state
   ``(c_T, S_T)`` starts the next rollout: the learner keeps ``(c_T, S_T)``, the actor acts from
   ``c_T``.

Why step 4 is the right carry for exact RTRL. With fixed weights, the carried ``(c_T, S_T)`` is
exactly the state and derivative that one forward pass over all rollouts would give, so the
gradient of any later segment equals BPTT through all of them (``tests/test_ppo.py`` checks this).
With changing weights, re-running with the final weights keeps ``c_T`` and ``S_T`` consistent
with each other (``S_T`` is the derivative of that very ``c_T``) and with the weights the next
rollout acts with; the behaviour policy and the first minibatch of the next update start from the
same ``c_0``, so PPO's ratio is 1 there (to rounding) and measures the weight change only. Carrying the
states from the last epoch's forwards instead would mix weights that differ between minibatches,
and would disagree with the actor's state. What stays approximate is the usual RTRL staleness:
``S_0`` of a rollout was built with older weights (the previous iteration's final ones, and
earlier ones further back), while the epochs change the weights several times; R2AC makes the same
approximation between segments. The stem below the core gets the within-segment gradient only.

Other cores: every ``rtrl-*`` core (eLSTM, LRU, RTU) works as above. ``snap1-lstm`` and
``uoro-lstm`` store and re-run their approximate sensitivities the same way. ``tbptt-*`` and
``lstm`` re-run from the stored, detached ``c_0`` (truncated BPTT over the rollout);
``bptt-elstm`` needs every rollout to be exactly one episode; ``none`` has no state. Nothing here
depends on the core: it only stores ``agent.initial_state(B, learner=True)``-shaped states.

Resuming restores the weights, the optimiser, the schedule and the counters. Environments cannot
be checkpointed, so every env starts a new episode after a restart, which zeroes its state and
sensitivities (the same as R2AC).
"""

from __future__ import annotations

import copy
import math
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rtrl.state import RecurrentState
from rtrl.rl import dists
from rtrl.rl.agent import Agent
from rtrl.rl.normalize import RewardScaler
from rtrl.rl.learner import (NonFiniteError, check_hyper_parameters, check_values, nan_means_diverged,
                              stop_if_diverging, zero_non_finite)
from rtrl.rl.optim import clip_grad_norm, make_optimizer
from rtrl.utils import ProgressBar, copy_weights_, resolve_device


@dataclass
class Segment:
    """One rollout of ``B`` envs, time-major; ``T`` steps plus the observation after them."""

    obs: Tensor  # (T+1, B, *obs_shape)
    reward: Tensor  # (T+1, B): reward[t] was received on arriving at obs[t] (the core's input)
    done: Tensor  # (T+1, B) bool: obs[t] is the first observation of a new episode
    action: Tensor  # (T, B) int64
    logprob: Tensor  # (T, B): log π_old(action[t]) under the rollout's weights
    value: Tensor  # (T+1, B): V_old(obs[t]); value[T] is the bootstrap
    state: RecurrentState  # the core's state before obs[0]: c (B, ...) and, for RTRL, S
    final_value: Optional[Tensor] = None  # (T+1, B): V_old(final obs) where a time limit cut the episode
    # that ended on arriving at obs[t], else 0 (see rtrl.rl.envs.base); None: no truncation

    @property
    def length(self) -> int:
        return self.action.shape[0]

    def to(self, device: torch.device) -> "Segment":
        """The same segment on ``device`` (itself if it is there already)."""
        if self.obs.device == device:
            return self
        move = lambda t: t.to(device, non_blocking=True) if t is not None else None  # noqa: E731
        return Segment(move(self.obs), move(self.reward), move(self.done), move(self.action), move(self.logprob),
                       move(self.value), self.state.map(move), move(self.final_value))

    def transitions(self) -> "Segment":
        """The same steps as a segment of length 1 over ``T·B`` streams (for a core without state,
        whose minibatches may then be any transitions; ``final_value`` and the bootstrap are dropped)."""
        T, n = self.length, self.length * self.action.shape[1]
        flat = lambda t: t[:T].reshape(1, n, *t.shape[2:])  # noqa: E731
        return Segment(flat(self.obs), flat(self.reward), flat(self.done), flat(self.action), flat(self.logprob),
                       flat(self.value), self.state.map(lambda t: t.new_zeros(n, *t.shape[1:])))

    def envs(self, idx: Tensor) -> "Segment":
        """The same segment for the envs ``idx`` only (their whole time range)."""
        return Segment(self.obs[:, idx], self.reward[:, idx], self.done[:, idx], self.action[:, idx],
                       self.logprob[:, idx], self.value[:, idx], self.state.map(lambda t: t[idx]),
                       self.final_value[:, idx] if self.final_value is not None else None)


class Collector:
    """Steps a ``VecEnv`` with the agent's sampling policy and cuts segments of ``unroll`` steps.

    ``state`` is the learner-side state before the next segment (with sensitivities for an RTRL
    core), on the learner's device; the actor acts from its ``c`` alone, on the cheap inference
    path, on the CPU: with ``agent`` itself, or with ``actor``, a CPU copy of it (see :meth:`publish`).
    """

    def __init__(self, env, agent: Agent, unroll: int, seed: int, actor: Optional[Agent] = None) -> None:
        self.env, self.unroll = env, unroll
        self.agent = actor if actor is not None else agent
        self.learner_agent = agent
        B = env.num_envs
        self.obs = torch.as_tensor(env.reset(seed))
        self.reward = torch.zeros(B)
        self.done = torch.ones(B, dtype=torch.bool)  # the first observation starts an episode
        self.state = agent.initial_state(B, learner=True)

    @torch.no_grad()
    def collect(self) -> tuple[Segment, list[tuple[float, int]]]:
        """The next segment and the (return, length) of every episode that ended in it."""
        T, B, dtype = self.unroll, self.env.num_envs, self.agent.policy.weight.dtype
        obs = torch.empty(T + 1, *self.obs.shape, dtype=self.obs.dtype)
        reward, done = torch.empty(T + 1, B), torch.empty(T + 1, B, dtype=torch.bool)
        continuous = self.agent.continuous
        action = torch.empty(T, B, self.agent.num_actions) if continuous else torch.empty(T, B, dtype=torch.long)
        logprob = torch.empty(T, B, dtype=dtype)
        value, final_value = torch.empty(T + 1, B, dtype=dtype), torch.zeros(T + 1, B, dtype=dtype)
        actor_state = RecurrentState(self.state.c.to(self.agent.policy.weight.device))
        for t in range(T + 1):
            obs[t], reward[t], done[t] = self.obs, self.reward, self.done
            with nan_means_diverged():  # a faulty env's NaN is acted on as 0, kept in the segment for the update
                logits, v, actor_state = self.agent(zero_non_finite(self.obs)[None], zero_non_finite(self.reward)[None],
                                                    self.done[None], actor_state)
                if not torch.isfinite(logits).all():
                    raise ValueError("logits hold NaN")
            value[t] = v[0]
            if t == T:  # only the bootstrap value of the observation after the segment
                break
            if continuous:
                action[t] = dists.sample(logits[0], True)
                logprob[t] = dists.log_prob(logits[0], action[t], True)
            else:
                logp = F.log_softmax(logits[0], -1)
                action[t] = torch.multinomial(logp.exp(), 1).squeeze(-1)
                logprob[t] = logp.gather(-1, action[t, :, None]).squeeze(-1)
            o, r, d = self.env.step(action[t].numpy())
            self.obs, self.reward = torch.as_tensor(o), torch.as_tensor(r, dtype=torch.float32)
            self.done = torch.as_tensor(d)
            if self.env.final_obs is not None:  # time limits: V(final obs), the state carried on (no reset)
                rows = torch.as_tensor(self.env.truncated.nonzero()[0])
                final = zero_non_finite(torch.as_tensor(self.env.final_obs[rows.numpy()]))
                final_value[t + 1, rows] = self.agent.final_value(final, zero_non_finite(self.reward[rows]),
                                                                  actor_state.map(lambda x: x[rows]))
        return (Segment(obs, reward, done, action, logprob, value, self.state, final_value),
                self.env.pop_episode_stats())

    def publish(self, agent: Agent) -> None:
        """Give the acting copy the learner's newest weights (nothing to do when they are one agent)."""
        if self.agent is not agent:
            copy_weights_(self.agent, agent)


def gae(reward: Tensor, done: Tensor, value: Tensor, discount: float, lam: float) -> tuple[Tensor, Tensor]:
    """GAE(λ) in a segment's layout: ``reward, done, value (T+1, B)`` -> advantages, returns ``(T, B)``.

    The transition from step ``t`` earns ``reward[t+1]``; ``done[t+1]`` means it ended the
    episode (``obs[t+1]`` already belongs to the next one), so nothing is bootstrapped across it.
    """
    with torch.no_grad():  # (not a decorator, which would hide the body from mutation testing)
        T = value.shape[0] - 1
        nonterminal = (~done[1:]).to(value.dtype)
        adv = torch.empty_like(value[:T])
        last = torch.zeros_like(value[0])
        for t in range(T - 1, -1, -1):
            delta = reward[t + 1] + discount * nonterminal[t] * value[t + 1] - value[t]
            last = delta + discount * lam * nonterminal[t] * last
            adv[t] = last
        return adv, adv + value[:T]


def advantages(seg: Segment, cfg, scaler: Optional[RewardScaler] = None) -> tuple[Tensor, Tensor]:
    """GAE advantages and returns ``(T, B)`` of a segment: rewards scaled by ``scaler`` (which advances
    its running returns over the segment), then clipped to ``±reward_clip``; where a time limit cut an
    episode, its last transition earns ``r + γ·V(final obs)`` (then, as at any episode end, nothing is
    bootstrapped across the boundary)."""
    reward = seg.reward.to(seg.value.dtype)
    if scaler is not None:
        reward = scaler(reward, seg.done, cfg.discount)
    if cfg.reward_clip > 0:
        reward = reward.clamp(-cfg.reward_clip, cfg.reward_clip)
    if seg.final_value is not None:
        reward = reward + cfg.discount * seg.final_value.to(reward.dtype)
    return gae(reward, seg.done, seg.value, cfg.discount, cfg.gae_lambda)


class PPO:
    """The optimiser, the schedule, the counters and the PPO update of one segment.

    ``cfg`` is a :class:`rtrl.rl.config.TrainConfig` (its ``ppo_*``, ``clip_*``, ``gae_lambda``,
    ``value_weight``, ``entropy_weight``, ``grad_clip``, ``discount``, ``reward_clip`` fields).
    """

    def __init__(self, agent: Agent, cfg, total_updates: int = 0) -> None:
        check_hyper_parameters(cfg)
        self.agent, self.cfg = agent, cfg
        params = [p for p in agent.parameters() if p.requires_grad]
        # Adam's eps 1e-5: the usual PPO setting; the learning rate decays linearly, once per iteration
        self.opt = make_optimizer(cfg.optimizer, params, cfg.lr, total_updates, rms_alpha=cfg.rms_alpha,
                                  rms_eps=cfg.rms_eps, adam_eps=1e-5)
        self.device = agent.policy.weight.device
        self.updates = 0  # iterations (one per rollout)
        self.skipped = 0
        self.reward_scaler = RewardScaler(cfg.num_envs).to(self.device) if cfg.reward_scale else None

    def loss(self, seg: Segment, adv: Tensor, ret: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """PPO's loss on ``seg`` (some envs' whole segments), re-run from ``seg.state`` with the
        current weights. ``adv``, ``ret`` ``(T, b)``: GAE advantages and returns of these envs.

        Stored states carry no autograd history, so a BPTT core's gradient stops at ``seg.state``
        (truncated BPTT) while an RTRL core adds the carry-in term through its sensitivities."""
        cfg, T = self.cfg, seg.length
        logits, values, _ = self.agent(seg.obs[:T], seg.reward[:T], seg.done[:T], seg.state)
        continuous = self.agent.continuous
        logprob = dists.log_prob(logits, seg.action, True) if continuous else \
            F.log_softmax(logits, -1).gather(-1, seg.action[..., None]).squeeze(-1)
        log_ratio = logprob - seg.logprob
        ratio = log_ratio.exp()
        adv = (adv - adv.mean()) / (adv.std(correction=0) + 1e-8)  # normalised per minibatch
        eps = self.ratio_clip
        policy = torch.max(-adv * ratio, -adv * ratio.clamp(1 - eps, 1 + eps)).mean()
        old_v = seg.value[:T]
        if cfg.clip_value:  # the value may move at most clip_coef from the rollout's estimate
            clipped = old_v + (values - old_v).clamp(-cfg.clip_coef, cfg.clip_coef)
            value = 0.5 * torch.max((values - ret) ** 2, (clipped - ret) ** 2).mean()
        else:
            value = 0.5 * ((values - ret) ** 2).mean()
        entropy = dists.entropy(logits, continuous).mean()
        total = policy + cfg.value_weight * value - cfg.entropy_weight * entropy
        with torch.no_grad():
            stats = dict(loss=total, policy_loss=policy, value_loss=value, entropy=entropy,
                         approx_kl=((ratio - 1) - log_ratio).mean(),
                         clip_frac=((ratio - 1).abs() > eps).to(ratio.dtype).mean())
        return total, {k: v.detach() for k, v in stats.items()}

    @property
    def ratio_clip(self) -> float:
        """The surrogate's ratio clip now: ``clip_coef``, or with ``clip_decay`` ``clip_coef`` times the
        fraction of the learning-rate schedule left (the value clip keeps ``clip_coef``)."""
        if not self.cfg.clip_decay:
            return self.cfg.clip_coef
        return self.cfg.clip_coef * (self.opt.lr / self.opt.base_lr if self.opt.base_lr > 0 else 1.0)

    def update(self, seg: Segment) -> tuple[dict[str, float], RecurrentState]:
        """All epochs on one segment; returns the statistics and the state to carry (see step 4
        in the module docstring). On NaN/Inf the weights and optimiser are restored to what they
        were before this segment and ``NonFiniteError`` is raised."""
        cfg, agent, T = self.cfg, self.agent, seg.length
        if agent.whole_episodes and not (seg.done[0].all() and seg.done[T].all()):
            raise ValueError(f"the {agent.core_name} core learns by BPTT over whole episodes: every rollout must be "
                             "exactly one episode; set --unroll to the (fixed) episode length")
        for name in ("obs", "reward"):  # these checks read the segment where the collector made it (the CPU)
            t = getattr(seg, name)
            if t.is_floating_point() and not torch.isfinite(t).all():
                self.skipped += 1
                raise NonFiniteError(f"segment.{name} holds NaN/Inf: update skipped, weights kept",
                                     source="environment")
        check_values(seg.value, cfg, self.updates)
        seg = seg.to(self.device)
        adv, ret = advantages(seg, cfg, self.reward_scaler)
        backup = copy.deepcopy((agent.state_dict(), self.opt.state_dict()))
        sums: Optional[Tensor] = None  # the minibatches' statistics, in the order of `names`
        names: list[str] = []
        n = 0
        # a core without state learns from any transitions: minibatches of single steps, shuffled (as
        # cleanrl's); a recurrent core's are whole envs' segments, re-run from their stored state
        stateless = agent.core_name == "none"
        batch, b_adv, b_ret = (seg.transitions(), adv.reshape(1, -1), ret.reshape(1, -1)) if stateless else (seg, adv, ret)
        for _ in range(cfg.ppo_epochs):
            # drawn on the CPU (the same draws on any device), moved once an epoch, not once a minibatch
            for idx in torch.randperm(batch.action.shape[1]).to(self.device).chunk(cfg.ppo_minibatches):
                with nan_means_diverged():  # the segment's inputs were found finite above
                    loss, stats = self.loss(batch.envs(idx), b_adv[:, idx], b_ret[:, idx])
                self.opt.zero_grad()
                loss.backward()
                grad_norm = clip_grad_norm(agent.parameters(), cfg.grad_clip)
                finite = torch.isfinite(torch.stack([loss.detach(), grad_norm.to(loss.dtype)])).tolist()
                if not all(finite):  # (the minibatch's one host sync: a NaN step must never be taken)
                    agent.load_state_dict(backup[0])
                    self.opt.load_state_dict(backup[1])
                    self.opt.zero_grad()
                    self.skipped += 1
                    raise NonFiniteError(f"non-finite loss or gradient at update {self.updates}: "
                                         "update skipped, weights kept",
                                         source="loss" if not finite[0] else "gradient")
                self.opt.step()
                row = torch.stack([*stats.values(), grad_norm.to(loss.dtype)]).double()  # summed where they are
                sums = row if sums is None else sums + row  # (read below, once)
                names = [*stats, "grad_norm"]
                n += 1
        lr = self.opt.lr
        self.opt.advance()  # the schedule counts iterations, not minibatch steps
        self.updates += 1
        agent.update_obs_stats(seg.obs[:T])  # the next rollout (and the carry below) normalise with these
        with torch.no_grad():  # the carry: c_T (and S_T for RTRL) under the final weights
            _, _, carried = agent(seg.obs[:T], seg.reward[:T], seg.done[:T], seg.state)
            var = ret.var()
            explained = torch.where(var > 0, 1 - (ret - seg.value[:T]).var() / var, float("nan"))
            read = torch.cat([sums / n,  # the update's one host sync
                              torch.stack([seg.value[:T].mean().double(), explained.double()])]).tolist()
        out = dict(zip(names, read[:-2]))
        out.update(lr=lr, mean_value=read[-2], explained_variance=read[-1])
        return out, carried.detach()

    def state_dict(self) -> dict:
        out = dict(optimizer=self.opt.state_dict(), updates=self.updates, skipped=self.skipped)
        if self.reward_scaler is not None:
            out["reward_scaler"] = self.reward_scaler.state_dict()
        return out

    def load_state_dict(self, d: dict) -> None:
        self.opt.load_state_dict(d["optimizer"], d.get("scheduler"))
        self.updates, self.skipped = int(d["updates"]), int(d["skipped"])
        if self.reward_scaler is not None and "reward_scaler" in d:
            self.reward_scaler.load_state_dict(d["reward_scaler"])
            self.reward_scaler.returns.zero_()  # a resumed run's envs all start new episodes


def train_ppo(cfg, run_dir: Optional[str | Path] = None, resume: bool = False, progress: bool = True) -> dict:
    """Train with PPO (``cfg.algo == "ppo"``); the run folder, checkpoints, resume, Ctrl-C and
    evaluation work as for R2AC (:func:`rtrl.rl.train.train`). Returns the final statistics."""
    from rtrl.rl.actors import ActorError, in_process_faults
    from rtrl.rl.envs import make_env
    from rtrl.rl.envs.base import ObservationError
    from rtrl.rl.config import build_agent
    from rtrl.rl.runbook import RunBook, finish_run, open_run, start_training
    from rtrl.runs import signals_held

    agent, spec = start_training(cfg)
    actor = None
    device = resolve_device(cfg.device)
    if device.type != "cpu":  # the learner's weights go to the device; a CPU copy acts
        actor = build_agent(cfg, spec)
        agent.to(device)
    ppo = PPO(agent, cfg, math.ceil(cfg.total_frames / cfg.frames_per_update) if cfg.lr_decay else 0)
    run = open_run(cfg, run_dir, resume, spec)
    book = RunBook(cfg, run, resume, "ppo", dict(agent=agent, ppo=ppo))
    counters, env_seed = book.counters, book.env_seed
    env = make_env(cfg.env, cfg.num_envs, seed=env_seed)
    collector = Collector(env, agent, cfg.unroll, env_seed, actor)
    collector.publish(agent)  # the acting copy starts from the (possibly resumed) weights

    returns: deque = deque(maxlen=100)
    bar = ProgressBar(cfg.total_frames, counters["frames"], progress, unit="frame")

    in_row, finished = 0, False  # updates skipped in a row; whether the loop ran to its end
    try:
        while counters["frames"] < cfg.total_frames:
            with in_process_faults():
                seg, episodes = collector.collect()
            returns.extend(ret for ret, _ in episodes)
            counters["episodes"] += len(episodes)
            with signals_held():  # Ctrl-C/SIGTERM wait for the update and its counters
                try:
                    stats, collector.state = ppo.update(seg)
                except NonFiniteError as e:  # the segment is dropped; its envs' state goes on (NaN read as 0)
                    print(f"warning: {e}", file=sys.stderr, flush=True)
                    in_row += 1
                    stop_if_diverging(e, in_row, cfg.lr, cfg.grad_clip)
                    with torch.no_grad():
                        seg = seg.to(device)
                        carried = agent(zero_non_finite(seg.obs[:-1]), zero_non_finite(seg.reward[:-1]), seg.done[:-1],
                                        seg.state)[2]
                    collector.state = carried.map(lambda t: torch.nan_to_num(t, 0.0, 0.0, 0.0))
                    continue
                in_row = 0
                collector.publish(agent)
                frames = seg.length * cfg.num_envs
                mean_ret = float(np.mean(returns)) if returns else float("nan")
                book.after_update(ppo.updates, frames, mean_ret, stats)
            bar.update(frames, ret=mean_ret, upd=ppo.updates)
        finished = True
    except (KeyboardInterrupt, ActorError, ObservationError):
        book.save()  # the weights as they are; frames and updates count finished iterations only
        raise
    finally:
        bar.close()
        env.close()
        if not finished and run is not None:
            run.close()  # stopped by an error or an interrupt: free the run folder (its lock) now
    result = dict(algo="ppo", env=cfg.env, core=cfg.core, unroll=cfg.unroll, seed=cfg.seed,
                  frames=counters["frames"], updates=ppo.updates, skipped_updates=ppo.skipped,
                  train_mean_return_last100=float(np.mean(returns)) if returns else None,
                  wall_s=round(book.elapsed(), 1))
    return finish_run(run, cfg, result)

