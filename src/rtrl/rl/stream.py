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

The networks (:class:`StreamAgent`): each of actor and critic is ``core → [Linear → LayerNorm (no
parameters) → leaky ReLU] × 2 → head`` (:class:`StreamNet` above the core); the linear layers start
sparse (90 % of each row's weights zero, the rest LeCun-uniform, biases 0); the core keeps its own
init. The core reads the normalised observation directly, so every parameter above it gets its exact
gradient by backprop and the core's by RTRL: nothing is truncated (a stem below the core would get
the within-step gradient only). The RTU's two cores run as one layer of twice the width (see
:class:`StreamAgent`), and one backward pass gives both networks' gradients.

Per-step cost: ``benchmarks/streaming.py``. Where this departs from Elsayed et al.'s code: the Gaussian
policy's log-std is a head output (``[mean; log_std]``, :mod:`rtrl.rl.dists`) rather than a softplus
std; sparse init keeps at least one weight per row; rewards are scaled by :class:`RewardScaler`
(cleanrl's rule, the repo's one implementation) rather than their wrapper.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtrl.checks import finite_inputs
from rtrl.rl import dists
from rtrl.rl.agent import CORES, WHOLE_EPISODE_CORES, _make_core
from rtrl.rl.normalize import ObsNormalizer, RewardScaler
from rtrl.state import RecurrentState, Sensitivities

STREAM_CORES = tuple(c for c in CORES if c not in WHOLE_EPISODE_CORES + ("snap1-lstm", "uoro-lstm")
                     and not c.startswith(("rtrl2", "tbptt2")))
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


FUSED_CORES = ("rtrl-rtu", "tbptt-rtu")
"""Cores whose actor and critic run as one layer of twice the width (see :class:`StreamAgent`)."""

StreamState = tuple  # one RecurrentState per core: (fused,) or (actor's, critic's)


class StreamNet(nn.Module):
    """The layers above a core: ``y (B, H) → 2 × (Linear, LayerNorm, leaky ReLU) → head (B, out)``."""

    def __init__(self, in_features: int, out: int, width: int, sparsity: float = 0.9) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(in_features, width), nn.Linear(width, width)
        self.head = nn.Linear(width, out)
        for layer in (self.fc1, self.fc2, self.head):
            sparse_init_(layer, sparsity)

    def forward(self, y: Tensor) -> Tensor:
        h = y
        for fc in (self.fc1, self.fc2):
            h = fc(h)
            # the width as a constant, not h.shape[-1:]: an exported (traced) graph keeps no shape reads
            h = F.leaky_relu(F.layer_norm(h, (fc.out_features,)))
        return self.head(h)


def _without_sensitivities(state: StreamState) -> StreamState:
    """The state for a forward without gradient: the cheap scan, no carry-out of sensitivities."""
    return tuple(RecurrentState(s.c) for s in state)


def _plain(s: RecurrentState) -> list:
    """A state as plain lists of tensors (checkpoints load with ``weights_only``: no custom classes)."""
    return [s.c, None if s.sensitivities is None else list(s.sensitivities)]


def _recurrent(saved: list) -> RecurrentState:
    c, sens = saved
    return RecurrentState(c, None if sens is None else Sensitivities(*sens))


class _Normalised(nn.Module):
    """The streaming agents' observation normaliser (``obs_rms``: an ObsNormalizer, or None) and dtype."""

    obs_rms: Optional[ObsNormalizer]
    dtype: torch.dtype

    def normalise(self, obs: Tensor) -> Tensor:
        """Raw observations ``(B, D)`` -> the networks' input ``(B, D)`` in the agent's dtype."""
        x = obs.to(self.dtype)
        return self.obs_rms(x) if self.obs_rms is not None else x

    @torch.no_grad()
    def update_obs_stats(self, obs: Tensor) -> None:
        """Fold observations ``(B, D)`` into the normaliser (every step, as Elsayed et al.)."""
        if self.obs_rms is not None:
            self.obs_rms.update(obs)


class StreamAgent(_Normalised):
    """The streaming agent: an observation normaliser (optional), the core(s), and separate actor and
    critic :class:`StreamNet` s above them. ``act`` has the signature of :meth:`rtrl.rl.agent.Agent.act`,
    so evaluation (:func:`rtrl.rl.runbook.evaluate`) runs it as any agent.

    The actor and the critic each have their own core of ``hidden_size`` features. For the RTU
    (``FUSED_CORES``) the two are one layer of ``2 · hidden_size``: its units are independent (an
    element-wise recurrence and an element-wise readout), so the first half is the actor's core and the
    second the critic's, exactly as two layers, at the cost of one exact-RTRL call per step instead of
    two. Each network's gradient is zero on the other's half, so its trace and its ObGD step touch only
    its own units. Cores whose readout mixes units (the eLSTM's output gate, the LRU's ``C``) stay two.
    """

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, core: str = "rtrl-rtu",
                 hidden_size: int = 64, width: int = 128, continuous: bool = False, obs_norm: bool = True,
                 activation: str = "relu", sparsity: float = 0.9, forget_bias: float = 0.0,
                 r_max: float = 1.0) -> None:
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
        self.fused = core in FUSED_CORES
        make = lambda n: _make_core(core, d, n, forget_bias, activation, r_max)  # noqa: E731
        self.cores = nn.ModuleList([make(2 * hidden_size)] if self.fused
                                   else [make(hidden_size), make(hidden_size)])
        h = self.cores[0].hidden_size // (2 if self.fused else 1)
        self.actor = StreamNet(h, self.param_size, width, sparsity)
        self.critic = StreamNet(h, 1, width, sparsity)

    @property
    def exact_rtrl(self) -> bool:
        return self.core_name.startswith("rtrl-")

    @property
    def dtype(self) -> torch.dtype:
        return self.actor.head.weight.dtype

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """The actor's and the critic's parameters (a fused core's are in both: see the class docstring)."""
        if self.fused:
            shared = list(self.cores[0].parameters())
            return list(self.actor.parameters()) + shared, list(self.critic.parameters()) + shared
        return ([*self.actor.parameters(), *self.cores[0].parameters()],
                [*self.critic.parameters(), *self.cores[1].parameters()])

    def actor_units(self) -> dict[int, Tensor]:
        """For a fused core: ``id(parameter) -> mask`` (same shape, 1.0 on the actor's half of the units, 0.0
        on the critic's), by the element-wise cell's layout: ``weight_ih (K·N, D)`` and ``bias (K·N,)`` gate-
        major, ``weight_hh (J, N)``. Empty for separate cores."""
        if not self.fused:
            return {}
        cell = self.cores[0].cell
        n = cell.hidden_size
        half = lambda idx: (idx % n < n // 2).to(self.dtype)  # noqa: E731
        rows = half(torch.arange(cell.weight_ih.shape[0]))
        masks = {id(cell.weight_ih): rows[:, None].expand_as(cell.weight_ih).clone(), id(cell.bias): rows,
                 id(cell.weight_hh): half(torch.arange(n)).expand_as(cell.weight_hh).clone()}
        if set(masks) != {id(p) for p in self.cores[0].parameters()}:
            raise ValueError(f"cannot split the {self.core_name} core's parameters between actor and critic")
        return masks

    def initial_state(self, batch_size: int, learner: bool = True) -> StreamState:
        """Zero states; with sensitivities for an exact-RTRL core on the learner's side."""
        w = self.actor.head.weight
        sens = learner and self.exact_rtrl
        return tuple(c.initial_state(batch_size, sensitivities=sens, device=w.device, dtype=w.dtype)
                     for c in self.cores)

    def _core(self, i: int, x: Tensor, s: RecurrentState, reset: Tensor) -> tuple[Tensor, RecurrentState]:
        y, s = self.cores[i](x[None], s, reset[None])
        return y[0], s

    def step(self, x: Tensor, state: StreamState, reset: Tensor) -> tuple[Tensor, Tensor, StreamState]:
        """One step of both networks: ``x (B, D)`` normalised, ``reset (B,)`` bool -> policy parameters
        ``(B, A|2A)``, values ``(B,)``, the state after the step."""
        if self.fused:
            y, s = self._core(0, x, state[0], reset)
            y_a, y_c = y.chunk(2, -1)
            new = (s,)
        else:
            (y_a, s_a), (y_c, s_c) = self._core(0, x, state[0], reset), self._core(1, x, state[1], reset)
            new = (s_a, s_c)
        return self.actor(y_a), self.critic(y_c)[:, 0], new

    def value(self, x: Tensor, state: StreamState, reset: Tensor) -> Tensor:
        """The critic alone: values ``(B,)`` (the state after the step is not needed)."""
        i = 0 if self.fused else 1
        y, _ = self._core(i, x, state[i], reset)
        return self.critic(y.chunk(2, -1)[1] if self.fused else y)[:, 0]

    @torch.no_grad()
    def act(self, obs: Tensor, prev_reward: Tensor, reset: Tensor, state: StreamState, greedy: bool = False):
        """``obs (B, D)``, ``reset (B,)`` -> action ``(B,)`` (continuous ``(B, A)``), policy parameters,
        state. ``prev_reward`` is not read (the networks take the observation alone)."""
        reset = reset if reset.dtype == torch.bool else reset > 0.5
        y, s = self._core(0, self.normalise(obs), RecurrentState(state[0].c), reset)
        params = self.actor(y.chunk(2, -1)[0] if self.fused else y)
        return dists.sample(params, self.continuous, greedy), params, (s, *state[1:])


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
        """``θ ← θ + α_eff δ z``; returns ``α_eff``. Where ``δ`` or ``z`` is NaN/Inf the weights stay and
        the traces restart from 0 (a NaN trace would block every later step); returns 0."""
        l1 = self.l1()
        if not (math.isfinite(delta) and math.isfinite(l1)):
            self.reset()
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


def _finite(obs: Tensor) -> Tensor:
    """``obs``, checked once here for NaN/Inf, so that the cores skip their own check (``finite_inputs``)."""
    if not bool(torch.isfinite(obs).all()):
        raise ValueError(f"an observation holds NaN or Inf ({obs.tolist()}); a streaming agent refuses it: "
                         "it would poison the normaliser, the state and the sensitivities")
    return obs


def _take(grads: tuple[Optional[Tensor], ...],
          split: list[tuple[int, Optional[Tensor]]]) -> list[Optional[Tensor]]:
    """One network's gradients out of the joint ones: ``grads[i]``, times ``mask`` where one is given."""
    return [grads[i] if m is None or grads[i] is None else grads[i] * m for i, m in split]


class StreamAC:
    """Stream AC(λ) for one :class:`StreamAgent` and one environment (see the module docstring).

    Driven as ``begin(obs)``, then per step ``a = act()``, the env's step, ``learn(...)``. ``lr = 0``
    freezes the weights (the traces still run), which the float64 tests use."""

    def __init__(self, agent: StreamAgent, lr: float = 1.0, discount: float = 0.99, lam: float = 0.8,
                 kappa_policy: float = 3.0, kappa_value: float = 2.0, entropy_weight: float = 0.01,
                 reward_scale: bool = True) -> None:
        self.agent, self.discount, self.entropy_weight = agent, discount, entropy_weight
        self.actor_params, self.critic_params = agent.parameter_groups()
        # one backward serves both networks: their parameters are disjoint but for a fused core, whose
        # gradient each takes on its own half of the units (actor_units); every list below is in the
        # order of self.params
        self.params = list({id(p): p for p in self.actor_params + self.critic_params}.values())
        index = {id(p): i for i, p in enumerate(self.params)}
        halves = agent.actor_units()
        self._actor_split = [(index[id(p)], halves.get(id(p))) for p in self.actor_params]
        self._critic_split = [(index[id(p)], None if id(p) not in halves else 1.0 - halves[id(p)])
                              for p in self.critic_params]
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
        o = _finite(torch.as_tensor(obs).reshape(1, *self.agent.obs_shape))
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
        with finite_inputs():  # (checked in _observe)
            params, value, state = agent.step(self.x, self.state, self.first)
        action = dists.sample(params.detach(), agent.continuous)
        logp = dists.log_prob(params, action, agent.continuous)
        self._pending = (value[0], logp[0], dists.entropy(params, agent.continuous)[0])
        self._next_state = tuple(s.detach() for s in state)  # TBPTT(1) for a BPTT core
        return action.numpy()

    def learn(self, reward: float, obs, done: bool, truncated: bool = False,
              final_obs=None) -> dict[str, float]:
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
            src = agent.normalise(_finite(torch.as_tensor(final_obs).reshape(1, -1))) if done else x_next
            with torch.no_grad(), finite_inputs():
                v_next = agent.value(src, _without_sensitivities(self._next_state),
                                     torch.zeros(1, dtype=torch.bool))
            boot = float(v_next)
        v = float(value.detach())
        delta = float(r[1, 0]) + gamma * boot - v
        # the entropy bonus enters the trace signed by δ, so that the step δ·z always raises entropy
        objective = logp + (self.entropy_weight * math.copysign(1.0, delta)) * entropy
        # one backward for both: V depends on the critic's parameters only, the objective on the actor's
        grads = torch.autograd.grad(value + objective, self.params, allow_unused=True)
        self.critic_opt.accumulate(_take(grads, self._critic_split))
        self.actor_opt.accumulate(_take(grads, self._actor_split))
        step_v = self.critic_opt.step(delta)
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
        self.state = tuple(_recurrent(s) for s in d["state"])
        self.first = d["first"].clone()
        if self.reward_scaler is not None and "reward_scaler" in d:
            self.reward_scaler.load_state_dict(d["reward_scaler"])
