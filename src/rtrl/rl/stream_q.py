"""Stream Q(λ) with any streaming rtrl core (``rtrl train --algo stream-q``): discrete actions, one env,
one update per step, as Elsayed, Vasan & Mahmood (2024) describe it, the core in front of the network.

Per step ``t`` with weights ``θ_t``: ``Q_t = Q(x_t, ·)`` (its graph kept); ``a_t`` is ε-greedy (ε falls
linearly from 1 to 0.01 over the first ``explore_steps`` steps); after the env step
``δ_t = r̃_{t+1} + γ max_a Q_θt(x_{t+1}, a) − Q_t(a_t)`` (0 bootstrap at a termination, ``max_a Q`` of the
final observation at a time limit); the trace ``z ← γλ z + ∇_θ Q_t(a_t)`` and the ObGD step
``θ ← θ + α_eff δ_t z`` (κ 2). Watkins's cut (Sutton & Barto §12.10): where ``a_t`` is not greedy the
trace restarts from 0 before ``∇Q_t(a_t)`` is added, since the λ-return of earlier pairs assumed the
greedy action there. As in :mod:`rtrl.rl.stream`, an exact-RTRL core makes ``∇_θ Q_t`` the gradient
through the whole past (the carry-in of its sensitivities), and ``tests/test_stream.py`` checks the
backward view against BPTT's forward view for it too.

Why Q(λ) and not QRC(λ) (Farr et al.'s value-based agent): Q(λ) is the one of the two with a tested
streaming reference (Elsayed et al.'s settings and code), and it needs no second, gradient-correction
network; QRC(λ) would add that network and its own step-size.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from rtrl.checks import finite_inputs
from rtrl.rl.agent import _make_core
from rtrl.rl.normalize import ObsNormalizer, RewardScaler
from rtrl.rl.stream import (STREAM_CORES, ObGD, StreamNet, StreamState, _finite, _Normalised, _plain,
                            _recurrent, _without_sensitivities)
from rtrl.state import RecurrentState

EPSILON_END = 0.01
EXPLORE_FRACTION = 0.2  # of a run's steps, over which ε falls from 1 to EPSILON_END (Elsayed et al.'s)


class QAgent(_Normalised):
    """Observation normaliser (optional), a core, and ``core → 2 × (Linear, LayerNorm, leaky ReLU) → Q``
    (:class:`rtrl.rl.stream.StreamNet`, sparse init). ``act`` has :meth:`rtrl.rl.agent.Agent.act`'s
    signature: greedy, or ε-greedy with ε = 0.01 (the end of training's exploration)."""

    continuous = False

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, core: str = "rtrl-rtu",
                 hidden_size: int = 64, width: int = 128, obs_norm: bool = True, activation: str = "relu",
                 sparsity: float = 0.9, forget_bias: float = 0.0, r_max: float = 1.0) -> None:
        super().__init__()
        if core not in STREAM_CORES:
            raise ValueError(f"core {core!r} cannot stream; choose one of {STREAM_CORES}")
        if len(obs_shape) != 1:
            raise ValueError(f"stream-q takes flat vector observations (D,), got shape {tuple(obs_shape)}")
        self.obs_shape, self.num_actions, self.core_name = tuple(obs_shape), num_actions, core
        self.param_size = num_actions
        self.obs_rms = ObsNormalizer(self.obs_shape) if obs_norm else None
        self.core = _make_core(core, obs_shape[0], hidden_size, forget_bias, activation, r_max)
        self.q = StreamNet(self.core.hidden_size, num_actions, width, sparsity)

    @property
    def exact_rtrl(self) -> bool:
        return self.core_name.startswith("rtrl-")

    @property
    def dtype(self) -> torch.dtype:
        return self.q.head.weight.dtype

    def initial_state(self, batch_size: int, learner: bool = True) -> StreamState:
        w = self.q.head.weight
        sens = learner and self.exact_rtrl
        return (self.core.initial_state(batch_size, sensitivities=sens, device=w.device, dtype=w.dtype),)

    def step(self, x: Tensor, state: StreamState, reset: Tensor) -> tuple[Tensor, StreamState]:
        """``x (B, D)`` normalised, ``reset (B,)`` bool -> ``Q (B, A)`` and the state after the step."""
        y, s = self.core(x[None], state[0], reset[None])
        return self.q(y[0]), (s,)

    @torch.no_grad()
    def act(self, obs: Tensor, prev_reward: Tensor, reset: Tensor, state: StreamState, greedy: bool = False):
        reset = reset if reset.dtype == torch.bool else reset > 0.5
        q, s = self.step(self.normalise(obs), (RecurrentState(state[0].c),), reset)
        action = q.argmax(-1)
        if not greedy:
            explore = torch.rand(action.shape) < EPSILON_END
            action = torch.where(explore, torch.randint(self.num_actions, action.shape), action)
        return action, q, s


class StreamQ:
    """Stream Q(λ) for one :class:`QAgent` and one env; the driving protocol of
    :class:`rtrl.rl.stream.StreamAC` (``begin``, then ``act`` / env step / ``learn``). ``explore_steps``: the
    steps over which ε falls to 0.01 (0: greedy from the start, as the float64 tests use)."""

    def __init__(self, agent: QAgent, lr: float = 1.0, discount: float = 0.99, lam: float = 0.8,
                 kappa: float = 2.0, reward_scale: bool = True, explore_steps: int = 0) -> None:
        self.agent, self.discount, self.explore_steps = agent, discount, explore_steps
        self.params = list(agent.core.parameters()) + list(agent.q.parameters())
        self.opt = ObGD(self.params, lr, discount, lam, kappa)
        self.reward_scaler = RewardScaler(1) if reward_scale else None
        self.state = agent.initial_state(1, learner=True)
        self.x: Optional[Tensor] = None
        self.first = torch.ones(1, dtype=torch.bool)
        self.steps = self.skipped = 0
        self._pending: Optional[Tensor] = None  # Q_t(a_t), with its graph
        self._next_state: Optional[StreamState] = None

    @classmethod
    def from_config(cls, agent: QAgent, cfg) -> "StreamQ":
        return cls(agent, cfg.lr, cfg.discount, cfg.trace_lambda, cfg.kappa_value, cfg.reward_scale,
                   int(EXPLORE_FRACTION * cfg.total_frames))

    @property
    def epsilon(self) -> float:
        if self.explore_steps <= 0:
            return 0.0
        return max(EPSILON_END, 1.0 - (1.0 - EPSILON_END) * self.steps / self.explore_steps)

    def _observe(self, obs) -> Tensor:
        o = _finite(torch.as_tensor(obs).reshape(1, *self.agent.obs_shape))
        self.agent.update_obs_stats(o)
        return self.agent.normalise(o)

    def begin(self, obs) -> None:
        self.x, self.first = self._observe(obs), torch.ones(1, dtype=torch.bool)

    def act(self) -> np.ndarray:
        """The ε-greedy action ``(1,)`` at the current observation; the trace restarts at an episode's
        first step and before an exploratory (non-greedy) action's gradient is added."""
        with finite_inputs():
            q, state = self.agent.step(self.x, self.state, self.first)
        greedy = int(q[0].argmax())
        action = greedy
        if self.epsilon > 0 and float(torch.rand(())) < self.epsilon:
            action = int(torch.randint(self.agent.num_actions, ()))
        if bool(self.first) or action != greedy:
            self.opt.reset()
        self._pending = q[0, action]
        self._next_state = tuple(s.detach() for s in state)
        return np.array([action], np.int64)

    def learn(self, reward: float, obs, done: bool, truncated: bool = False,
              final_obs=None) -> dict[str, float]:
        """One update from the transition the last :meth:`act` started (arguments as
        :meth:`rtrl.rl.stream.StreamAC.learn`)."""
        agent, gamma, q_a = self.agent, self.discount, self._pending
        r = torch.tensor([[0.0], [float(reward)]], dtype=torch.float64)
        if self.reward_scaler is not None:
            r = self.reward_scaler(r, torch.tensor([[False], [bool(done)]]), gamma)
        x_next = self._observe(obs)
        boot = 0.0
        if not done or truncated:
            src = agent.normalise(_finite(torch.as_tensor(final_obs).reshape(1, -1))) if done else x_next
            with torch.no_grad(), finite_inputs():
                q_next, _ = agent.step(src, _without_sensitivities(self._next_state),
                                       torch.zeros(1, dtype=torch.bool))
            boot = float(q_next.max())
        v = float(q_a.detach())
        delta = float(r[1, 0]) + gamma * boot - v
        self.opt.accumulate(torch.autograd.grad(q_a, self.params, allow_unused=True))
        step = self.opt.step(delta)
        if not math.isfinite(delta):
            self.skipped += 1
        self.state, self._pending = self._next_state, None
        self.x, self.first = x_next, torch.tensor([bool(done)])
        self.steps += 1
        return dict(delta=delta, value=v, step_value=step, epsilon=self.epsilon)

    def state_dict(self) -> dict:
        out = dict(opt=self.opt.state_dict(), steps=self.steps, skipped=self.skipped,
                   state=[_plain(s) for s in self.state], first=self.first.clone())
        if self.reward_scaler is not None:
            out["reward_scaler"] = self.reward_scaler.state_dict()
        return out

    def load_state_dict(self, d: dict) -> None:
        self.opt.load_state_dict(d["opt"])
        self.steps, self.skipped = int(d["steps"]), int(d["skipped"])
        self.state = tuple(_recurrent(s) for s in d["state"])
        self.first = d["first"].clone()
        if self.reward_scaler is not None and "reward_scaler" in d:
            self.reward_scaler.load_state_dict(d["reward_scaler"])
