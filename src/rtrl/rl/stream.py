"""Stream AC(λ) with any rtrl core: one environment, one update per step, no replay, no batch
(``rtrl train --algo stream-ac``).

The learner is Elsayed, Vasan & Mahmood's stream AC(λ) ("Streaming Deep Reinforcement Learning
Finally Works", 2024) with the recurrent core in front of its networks, as Farr et al. (2026) put an
RTU trained by exact RTRL there. Per step ``t``, with weights ``θ_t``:

1. **Act.** The actor and the critic (separate networks, each its own core) read the normalised
   observation ``x_t``; their forward passes keep their graphs: ``V_t`` and ``log π_t(a_t)``.
2. **TD error.** After the env step, ``δ_t = r̃_{t+1} + γ V_θt(x_{t+1}) − V_t`` (``r̃``: the scaled
   reward; ``V(x_{t+1})`` taken without gradient from the critic's state after step ``t``; 0 at a
   termination; at a time limit, ``V`` of the final observation, the state carried on).
3. **Traces.** ``z_V ← γλ z_V + ∇_θ V_t`` and ``z_π ← γλ z_π + ∇_θ (log π_t(a_t) + β sign(δ_t) H_t)``.
4. **ObGD step** (their optimiser): ``θ ← θ + α_eff δ_t z`` per network, with
   ``α_eff = α / max(1, α κ max(|δ_t|, 1) ‖z‖₁)`` (κ 2 for the critic, 3 for the actor).

Traces, states and sensitivities are zeroed where an episode starts (the step after ``done``), the
same place the core's own reset rule zeroes the state.

Why the trace composes with RTRL. For an exact-RTRL core (``rtrl-*``) the state carries the
sensitivities ``S_{t-1} = dc_{t-1}/dθ``, and the backward of the one-step segment adds the carry-in
``∂V_t/∂c_{t-1} · S_{t-1}``, so ``∇_θ V_t`` in step 3 is the gradient through the whole past of the
episode, not a truncated one. With weights frozen over an episode the backward view
``Σ_t δ_t z_t`` then equals the forward view ``Σ_t (G^λ_t − V_t) ∇_θ V_t`` of BPTT through the
whole episode (``tests/test_stream.py`` checks both traces in float64). ``tbptt-*`` cores detach
the state every step: streaming TBPTT(1). ``none``: Elsayed et al.'s feed-forward networks.
What stays approximate is RTRL's staleness: ``S_{t-1}`` was built under ``θ_{t-1}, θ_{t-2}, …``
while the weights change every step (Farr et al. study its size).

The networks (:class:`StreamNet`): ``core → [Linear → LayerNorm (no parameters) → leaky ReLU] × 2
→ head``; the linear layers start sparse (90 % of each row's weights zero, the rest LeCun-uniform,
biases 0); the core keeps its own init. The core reads the normalised observation directly, so
every parameter above it gets its exact gradient by backprop and the core's by RTRL: nothing is
truncated (a stem below the core would get the within-step gradient only).
"""

from __future__ import annotations

import math
import sys
from collections import deque
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtrl.rl import dists
from rtrl.rl.agent import CORES, WHOLE_EPISODE_CORES, _make_core
from rtrl.rl.normalize import ObsNormalizer, RewardScaler
from rtrl.state import RecurrentState, Sensitivities

STREAM_CORES = tuple(c for c in CORES if c not in WHOLE_EPISODE_CORES and not c.startswith(("rtrl2", "tbptt2"))
                     and c not in ("snap1-lstm", "uoro-lstm"))
BLOCK = 1000  # steps between the run book's log/checkpoint points (its "updates" count blocks)


def sparse_init_(layer: nn.Linear, sparsity: float = 0.9) -> None:
    """Elsayed et al.'s sparse init: in each row (output unit) of ``layer.weight`` ``(out, in)`` a random
    ``ceil(sparsity · in)`` of the weights are 0, the rest LeCun-uniform ``U(±√(3/in))``; bias 0.

    At least one weight of a row stays: with few inputs (MemoryChain's 3) ``ceil(0.9 · in) = in``
    would zero a whole layer, and the LayerNorm after it would see a constant."""
    out_f, in_f = layer.weight.shape
    with torch.no_grad():
        bound = math.sqrt(3.0 / in_f)
        layer.weight.uniform_(-bound, bound)
        n_zero = min(math.ceil(sparsity * in_f), in_f - 1)
        # each row's first n_zero columns of a random permutation (the argsort of uniform noise)
        cols = torch.rand(out_f, in_f, device=layer.weight.device).argsort(1)[:, :n_zero]
        layer.weight.scatter_(1, cols, 0.0)
        layer.bias.zero_()


class StreamNet(nn.Module):
    """One network of the streaming agent: ``x (B, D) → core → 2 × (Linear, LayerNorm, leaky ReLU) → head``.

    ``forward(x, state, reset)`` with ``reset (B,)`` bool (``x`` starts an episode) returns the head's
    output ``(B, out)`` and the core's state after the step (a segment of length 1)."""

    def __init__(self, obs_dim: int, out: int, core: str, hidden_size: int, width: int,
                 activation: str = "relu", sparsity: float = 0.9) -> None:
        super().__init__()
        self.core = _make_core(core, obs_dim, hidden_size, 0.0, activation)
        self.fc1, self.fc2 = nn.Linear(self.core.hidden_size, width), nn.Linear(width, width)
        self.head = nn.Linear(width, out)
        for layer in (self.fc1, self.fc2, self.head):
            sparse_init_(layer, sparsity)

    def forward(self, x: Tensor, state: RecurrentState, reset: Tensor) -> tuple[Tensor, RecurrentState]:
        y, state = self.core(x[None], state, reset[None])
        h = y[0]
        for fc in (self.fc1, self.fc2):
            h = fc(h)
            h = F.leaky_relu(F.layer_norm(h, h.shape[-1:]))
        return self.head(h), state


class StreamState(NamedTuple):
    """The carried state of the actor's and the critic's cores (each a :class:`RecurrentState`)."""

    actor: RecurrentState
    critic: RecurrentState

    def map(self, fn: Callable[[Tensor], Tensor]) -> "StreamState":
        return StreamState(self.actor.map(fn), self.critic.map(fn))


def _without_sensitivities(s: RecurrentState) -> RecurrentState:
    """The state for a forward without gradient: the cheap scan, no carry-out of sensitivities."""
    return RecurrentState(s.c)


def _plain(s: RecurrentState) -> list:
    """A state as plain lists of tensors (checkpoints load with ``weights_only``: no custom classes)."""
    return [s.c, None if s.sensitivities is None else list(s.sensitivities)]


def _recurrent(saved: list) -> RecurrentState:
    c, sens = saved
    return RecurrentState(c, None if sens is None else Sensitivities(*sens))


class StreamAgent(nn.Module):
    """The streaming agent: an observation normaliser (optional) and separate actor and critic
    :class:`StreamNet` s. ``act`` has the signature of :meth:`rtrl.rl.agent.Agent.act`, so evaluation
    (:func:`rtrl.rl.runbook.evaluate`) runs it as any agent; its state is a :class:`StreamState`."""

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, core: str = "rtrl-rtu",
                 hidden_size: int = 64, width: int = 128, continuous: bool = False, obs_norm: bool = True,
                 activation: str = "relu", sparsity: float = 0.9) -> None:
        super().__init__()
        if core not in STREAM_CORES:
            raise ValueError(f"core {core!r} cannot stream; choose one of {STREAM_CORES}")
        if len(obs_shape) != 1:
            raise ValueError(f"stream-ac takes flat vector observations (D,), got shape {tuple(obs_shape)}")
        self.obs_shape, self.num_actions, self.core_name = tuple(obs_shape), num_actions, core
        self.continuous = bool(continuous)
        self.obs_rms = ObsNormalizer(self.obs_shape) if obs_norm else None
        self.param_size = 2 * num_actions if self.continuous else num_actions
        d = obs_shape[0]
        self.actor = StreamNet(d, self.param_size, core, hidden_size, width, activation, sparsity)
        self.critic = StreamNet(d, 1, core, hidden_size, width, activation, sparsity)

    @property
    def exact_rtrl(self) -> bool:
        return self.core_name.startswith("rtrl-")

    @property
    def dtype(self) -> torch.dtype:
        return self.actor.head.weight.dtype

    def initial_state(self, batch_size: int, learner: bool = True) -> StreamState:
        """Zero states; with sensitivities for an exact-RTRL core on the learner's side."""
        w = self.actor.head.weight
        sens = learner and self.exact_rtrl
        return StreamState(*(net.core.initial_state(batch_size, sensitivities=sens, device=w.device, dtype=w.dtype)
                             for net in (self.actor, self.critic)))

    def normalise(self, obs: Tensor) -> Tensor:
        """Raw observations ``(B, D)`` -> the networks' input ``(B, D)`` in the agent's dtype."""
        x = obs.to(self.dtype)
        return self.obs_rms(x) if self.obs_rms is not None else x

    @torch.no_grad()
    def update_obs_stats(self, obs: Tensor) -> None:
        """Fold observations ``(B, D)`` into the normaliser (every step, as Elsayed et al.)."""
        if self.obs_rms is not None:
            self.obs_rms.update(obs)

    @torch.no_grad()
    def act(self, obs: Tensor, prev_reward: Tensor, reset: Tensor, state: StreamState, greedy: bool = False):
        """``obs (B, D)``, ``reset (B,)`` -> action ``(B,)`` (continuous ``(B, A)``), policy parameters,
        state. ``prev_reward`` is not read (the networks take the observation alone)."""
        reset = reset if reset.dtype == torch.bool else reset > 0.5
        params, s_a = self.actor(self.normalise(obs), _without_sensitivities(state.actor), reset)
        return dists.sample(params, self.continuous, greedy), params, StreamState(s_a, state.critic)


class ObGD:
    """Eligibility traces over ``params`` and the overshooting-bounded step (Elsayed et al. 2024).

    ``accumulate(grads)``: ``z ← γλ z + g``. ``step(δ)``: ``θ ← θ + α_eff δ z`` with
    ``α_eff = α / max(1, α κ max(|δ|, 1) ‖z‖₁)``, ``‖z‖₁`` summed over all of ``params``: the bound keeps
    the step from overshooting the TD target by more than the TD error itself. The traces are
    optimiser state (``state_dict``)."""

    def __init__(self, params: list[Tensor], lr: float, discount: float, lam: float, kappa: float) -> None:
        self.params = list(params)
        self.lr, self.decay, self.kappa = lr, discount * lam, kappa
        self.traces = [torch.zeros_like(p) for p in self.params]

    def accumulate(self, grads: tuple[Optional[Tensor], ...]) -> None:
        """``z ← γλ z + g`` (a parameter with no gradient, ``None``, only decays)."""
        torch._foreach_mul_(self.traces, self.decay)
        pairs = [(z, g) for z, g in zip(self.traces, grads) if g is not None]
        if pairs:
            torch._foreach_add_([z for z, _ in pairs], [g for _, g in pairs])

    def l1(self) -> float:
        """``‖z‖₁`` over all traces."""
        return float(torch.stack(torch._foreach_norm(self.traces, 1)).sum())

    def step_size(self, delta: float, l1: Optional[float] = None) -> float:
        """``α_eff`` for TD error ``delta`` (``l1``: ``‖z‖₁`` if already known)."""
        l1 = self.l1() if l1 is None else l1
        return self.lr / max(1.0, self.lr * self.kappa * max(abs(delta), 1.0) * l1)

    @torch.no_grad()
    def step(self, delta: float) -> float:
        """``θ ← θ + α_eff δ z``; returns ``α_eff`` (0, nothing changed, when ``δ`` or ``z`` is not finite)."""
        l1 = self.l1()
        if not (math.isfinite(delta) and math.isfinite(l1)):
            return 0.0
        alpha = self.step_size(delta, l1)
        torch._foreach_add_(self.params, self.traces, alpha=alpha * delta)
        return alpha

    def reset(self) -> None:
        torch._foreach_zero_(self.traces)

    def state_dict(self) -> dict:
        return dict(traces=[z.clone() for z in self.traces])

    def load_state_dict(self, d: dict) -> None:
        for z, saved in zip(self.traces, d["traces"]):
            z.copy_(saved)


class StreamAC:
    """Stream AC(λ) for one :class:`StreamAgent` and one environment (see the module docstring).

    Driven as ``begin(obs)``, then per step ``a = act()``, the env's step, ``learn(...)``. ``lr = 0``
    freezes the weights (the traces still run), which the float64 tests use."""

    def __init__(self, agent: StreamAgent, lr: float = 1.0, discount: float = 0.99, lam: float = 0.8,
                 kappa_policy: float = 3.0, kappa_value: float = 2.0, entropy_weight: float = 0.01,
                 reward_scale: bool = True) -> None:
        self.agent, self.discount, self.entropy_weight = agent, discount, entropy_weight
        self.actor_params = [p for p in agent.actor.parameters() if p.requires_grad]
        self.critic_params = [p for p in agent.critic.parameters() if p.requires_grad]
        self.actor_opt = ObGD(self.actor_params, lr, discount, lam, kappa_policy)
        self.critic_opt = ObGD(self.critic_params, lr, discount, lam, kappa_value)
        self.reward_scaler = RewardScaler(1) if reward_scale else None
        self.state = agent.initial_state(1, learner=True)
        self.x: Optional[Tensor] = None  # the normalised current observation (1, D)
        self.first = torch.ones(1, dtype=torch.bool)  # x starts an episode
        self.steps = self.skipped = 0
        self._pending: Optional[tuple[Tensor, Tensor, Tensor]] = None  # V_t, log π_t(a_t), H_t with graphs
        self._next_state: Optional[StreamState] = None

    @classmethod
    def from_config(cls, agent: StreamAgent, cfg) -> "StreamAC":
        return cls(agent, cfg.lr, cfg.discount, cfg.trace_lambda, cfg.kappa_policy, cfg.kappa_value,
                   cfg.entropy_weight, cfg.reward_scale)

    def _observe(self, obs) -> Tensor:
        o = torch.as_tensor(obs).reshape(1, *self.agent.obs_shape)
        self.agent.update_obs_stats(o)
        return self.agent.normalise(o)

    def begin(self, obs) -> None:
        """Start from the env's first observation ``obs`` ``(1, D)``: a new episode."""
        self.x, self.first = self._observe(obs), torch.ones(1, dtype=torch.bool)

    def act(self) -> np.ndarray:
        """The action at the current observation ``(1,)`` int (continuous ``(1, A)`` float), drawn from
        the actor's forward pass; that pass and the critic's keep their graphs for :meth:`learn`."""
        agent = self.agent
        if bool(self.first):  # an episode starts: the cores zero state and sensitivities (reset), traces here
            self.actor_opt.reset()
            self.critic_opt.reset()
        params, s_a = agent.actor(self.x, self.state.actor, self.first)
        value, s_c = agent.critic(self.x, self.state.critic, self.first)
        action = dists.sample(params.detach(), agent.continuous)
        logp = dists.log_prob(params, action, agent.continuous)
        self._pending = (value[0, 0], logp[0], dists.entropy(params, agent.continuous)[0])
        self._next_state = StreamState(s_a.detach(), s_c.detach())  # TBPTT(1) for a BPTT core
        return action.numpy()

    def learn(self, reward: float, obs, done: bool, truncated: bool = False, final_obs=None) -> dict[str, float]:
        """One update from the transition the last :meth:`act` started: ``reward`` and ``obs`` (the next
        observation; after ``done`` the next episode's first), ``truncated`` (a time limit ended it) with
        ``final_obs`` (the observation it stopped at). Returns ``delta``, the step sizes and ``value``."""
        agent, gamma = self.agent, self.discount
        value, logp, entropy = self._pending
        r = torch.tensor([[0.0], [float(reward)]], dtype=torch.float64)
        if self.reward_scaler is not None:
            r = self.reward_scaler(r, torch.tensor([[False], [bool(done)]]), gamma)
        x_next = self._observe(obs)
        boot = 0.0
        if not done or truncated:
            src = agent.normalise(torch.as_tensor(final_obs).reshape(1, -1)) if done else x_next
            with torch.no_grad():
                v_next, _ = agent.critic(src, _without_sensitivities(self._next_state.critic),
                                         torch.zeros(1, dtype=torch.bool))
            boot = float(v_next)
        v = float(value.detach())
        delta = float(r[1, 0]) + gamma * boot - v
        g_v = torch.autograd.grad(value, self.critic_params, allow_unused=True)
        self.critic_opt.accumulate(g_v)
        step_v = self.critic_opt.step(delta)
        # the entropy bonus enters the trace signed by δ, so that the step δ·z always raises entropy
        objective = logp + (self.entropy_weight * math.copysign(1.0, delta)) * entropy
        g_pi = torch.autograd.grad(objective, self.actor_params, allow_unused=True)
        self.actor_opt.accumulate(g_pi)
        step_pi = self.actor_opt.step(delta)
        if not math.isfinite(delta):
            self.skipped += 1
        self.state, self._pending = self._next_state, None
        self.x, self.first = x_next, torch.tensor([bool(done)])
        self.steps += 1
        return dict(delta=delta, value=v, step_value=step_v, step_policy=step_pi,
                    entropy=float(entropy.detach()))

    def state_dict(self) -> dict:
        out = dict(actor_opt=self.actor_opt.state_dict(), critic_opt=self.critic_opt.state_dict(),
                   steps=self.steps, skipped=self.skipped, state=[_plain(s) for s in self.state],
                   first=self.first.clone())
        if self.reward_scaler is not None:
            out["reward_scaler"] = self.reward_scaler.state_dict()
        return out

    def load_state_dict(self, d: dict) -> None:
        self.actor_opt.load_state_dict(d["actor_opt"])
        self.critic_opt.load_state_dict(d["critic_opt"])
        self.steps, self.skipped = int(d["steps"]), int(d["skipped"])
        self.state = StreamState(*(_recurrent(s) for s in d["state"]))
        self.first = d["first"].clone()
        if self.reward_scaler is not None and "reward_scaler" in d:
            self.reward_scaler.load_state_dict(d["reward_scaler"])


def train_stream(cfg, run_dir: Optional[str | Path] = None, resume: bool = False, progress: bool = True) -> dict:
    """Train with stream AC(λ) (``cfg.algo == "stream-ac"``): one env, one update per step. The run
    folder, checkpoints (weights, normaliser, traces, the cores' states and sensitivities, RNG), resume,
    Ctrl-C and evaluation work as for PPO; the run book's "updates" are blocks of ``BLOCK`` steps.
    An env cannot be checkpointed, so a resumed run starts a new episode (which zeroes state and traces)."""
    from rtrl.rl.envs import make_env
    from rtrl.rl.runbook import RunBook, finish_run, open_run, start_training
    from rtrl.runs import signals_held
    from rtrl.utils import ProgressBar

    agent, spec = start_training(cfg)
    learner = StreamAC.from_config(agent, cfg)
    run = open_run(cfg, run_dir, resume, spec)
    book = RunBook(cfg, run, resume, "stream-ac", dict(agent=agent, learner=learner))
    counters = book.counters
    env = make_env(cfg.env, 1, seed=book.env_seed)
    learner.begin(env.reset(book.env_seed))
    returns: deque = deque(maxlen=100)
    bar = ProgressBar(cfg.total_frames, counters["frames"], progress, unit="step")
    blocks, finished = -(-counters["frames"] // BLOCK), False  # a partial block counts as one
    try:
        while counters["frames"] < cfg.total_frames:
            n = min(BLOCK - counters["frames"] % BLOCK, cfg.total_frames - counters["frames"])
            sums: dict[str, float] = {}
            for _ in range(n):
                o, r, d = env.step(learner.act())
                stats = learner.learn(float(r[0]), o, bool(d[0]), bool(env.truncated[0]), env.final_obs)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
            episodes = env.pop_episode_stats()
            returns.extend(ret for ret, _ in episodes)
            counters["episodes"] += len(episodes)
            blocks += 1
            mean_ret = float(np.mean(returns)) if returns else float("nan")
            with signals_held():  # Ctrl-C/SIGTERM wait for the counters and the checkpoint
                book.after_update(blocks, n, mean_ret, dict({k: v / n for k, v in sums.items()},
                                                            skipped=learner.skipped))
            bar.update(n, ret=mean_ret)
        finished = True
    except KeyboardInterrupt:
        book.save()  # the weights as they are; the frames count finished blocks only
        raise
    finally:
        bar.close()
        env.close()
        if not finished and run is not None:
            run.close()
    if learner.skipped:
        print(f"warning: {learner.skipped} steps had a non-finite TD error and were skipped", file=sys.stderr)
    result = dict(algo="stream-ac", env=cfg.env, core=cfg.core, seed=cfg.seed, frames=counters["frames"],
                  episodes=counters["episodes"], skipped_updates=learner.skipped,
                  train_mean_return_last100=float(np.mean(returns)) if returns else None,
                  wall_s=round(book.elapsed(), 1))
    return finish_run(run, cfg, result)
