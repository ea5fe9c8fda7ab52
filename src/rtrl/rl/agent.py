"""The R2AC agent: observation encoder -> recurrent core -> policy and value heads.

    x_t = [encoder(obs_t); clamp(r_{t-1}, -1, 1)]        (D = features + 1; r_{t-1} = 0 where reset_t)
    y_t, state = core(x_t, state, reset_t)               reset_t: obs_t starts a new episode

Reset rule, written once: at an episode's first step nothing of the previous episode reaches the
agent: the core's state (and its sensitivities) is zeroed and the previous-reward input is 0 (the
reward that arrived with that observation closed the previous episode).
    logits_t, value_t = heads(y_t)

Policy heads (:mod:`rtrl.rl.dists`): discrete actions get categorical logits ``(A,)``; continuous
(Box) actions a diagonal Gaussian whose parameters ``[mean; log_std]`` ``(2A,)`` take the place of
the logits everywhere (rollouts, V-trace, PPO, export): the mean from the core's output, the
log-std a learned, state-independent vector.

Cores (``CORES``): ``rtrl-elstm`` (exact RTRL), ``tbptt-elstm`` (eLSTM, BPTT within the segment),
``bptt-elstm`` (eLSTM, BPTT over whole episodes: each rollout must be exactly one episode),
``rtrl-lru``/``tbptt-lru`` and ``rtrl-rtu``/``tbptt-rtu`` (the LRU and the ReLU-output RTU of
:mod:`rtrl.nn`, exact RTRL or BPTT within the segment; their states are complex tensors),
``rtrl-diag``/``tbptt-diag`` (:class:`rtrl.nn.DiagonalLinearRNN`, a real diagonal linear recurrence
with an output gate: the control that tells the eLSTM's gates from a real element-wise recurrence),
``rtrl2-lru``/``tbptt2-lru``/``bptt2-lru`` (two stacked LRU layers, :class:`rtrl.nn.TwoLayer`: the top
by exact RTRL and the bottom by BPTT within the segment; both by BPTT within the segment; both by
BPTT over whole episodes, each rollout exactly one episode, as ``bptt-elstm``),
``lstm`` (``nn.LSTM`` weights, BPTT within the segment), ``gru`` (``nn.GRU`` weights, BPTT within
the segment: the strongest of POPGym's memory models), ``snap1-lstm`` and ``uoro-lstm`` (a dense
LSTM learned with the approximate RTRL of :mod:`rtrl.approx`: BPTT within the segment plus the
approximate carry-in) and ``none`` (feedforward). Every core has
the same API as :class:`rtrl.nn.ELSTM` and a :class:`rtrl.exact.RecurrentState` whose tensors
are batch first, so the learner can keep one slot per stream for any of them.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtrl.approx import SnAp1LSTM, UOROLSTM
from rtrl.rl import dists
from rtrl.rl.normalize import ObsNormalizer
from rtrl.state import RecurrentState
from rtrl.nn import ELSTM, LRU, RTU, DiagonalLinearRNN, TwoLayer

CORES = ("rtrl-elstm", "tbptt-elstm", "bptt-elstm", "rtrl-lru", "tbptt-lru", "rtrl-rtu", "tbptt-rtu",
         "rtrl-diag", "tbptt-diag", "rtrl2-lru", "tbptt2-lru", "bptt2-lru", "lstm", "gru", "snap1-lstm",
         "uoro-lstm", "none")
RING_CORES = ("rtrl-lru", "tbptt-lru", "rtrl-rtu", "tbptt-rtu")  # λ drawn on a ring r_min <= |λ| <= r_max
WHOLE_EPISODE_CORES = ("bptt-elstm", "bptt2-lru")  # BPTT over whole episodes: each rollout one episode


class _SteppedCell(nn.Module):
    """A ``torch.nn`` RNN cell (``cell_type``) stepped one step at a time so that ``reset`` can zero
    the state mid-segment, trained by truncated BPTT. State: ``RecurrentState(c)`` of shape
    ``(B, state_factor · N)``."""

    learning = "bptt"
    cell_type: type = nn.RNNCell
    state_factor = 1

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.cell = self.cell_type(input_size, hidden_size)

    def initial_state(self, batch_size: int, sensitivities: Optional[bool] = None, device=None, dtype=None):
        w = self.cell.weight_ih
        return RecurrentState(torch.zeros(batch_size, self.state_factor * self.hidden_size,
                                          device=device or w.device, dtype=dtype or w.dtype))


class ResettableLSTM(_SteppedCell):
    """``nn.LSTM`` weights stepped with resets. State: ``RecurrentState(c=[h; c])``, ``(B, 2N)``."""

    cell_type, state_factor = nn.LSTMCell, 2

    def forward(self, x: Tensor, state: RecurrentState, reset: Optional[Tensor] = None):
        h, c = state.c.chunk(2, -1)
        ys = []
        for t in range(x.shape[0]):
            if reset is not None:
                keep = (~reset[t]).to(x.dtype)[:, None]
                h, c = h * keep, c * keep
            h, c = self.cell(x[t], (h, c))
            ys.append(h)
        return torch.stack(ys), RecurrentState(torch.cat((h, c), -1))


class ResettableGRU(_SteppedCell):
    """``nn.GRU`` weights stepped with resets. State: ``RecurrentState(c=h)``, ``(B, N)``."""

    cell_type = nn.GRUCell

    def forward(self, x: Tensor, state: RecurrentState, reset: Optional[Tensor] = None):
        h, ys = state.c, []
        for t in range(x.shape[0]):
            if reset is not None:
                h = h * (~reset[t]).to(x.dtype)[:, None]
            h = self.cell(x[t], h)
            ys.append(h)
        return torch.stack(ys), RecurrentState(h)


class Feedforward(nn.Module):
    """No memory: the heads read the encoder's features (and the reward) directly."""

    learning = "bptt"

    def __init__(self, input_size: int) -> None:
        super().__init__()
        self.hidden_size = input_size

    def initial_state(self, batch_size: int, sensitivities: Optional[bool] = None, device=None, dtype=None):
        return RecurrentState(torch.zeros(batch_size, 0, device=device, dtype=dtype))

    def forward(self, x: Tensor, state: RecurrentState, reset: Optional[Tensor] = None):
        return x, state


class _ConvStem(nn.Module):
    """Pixels ``(C, H, W)`` uint8 -> ``convs`` (ending in a ReLU) -> flatten -> ReLU(fc)."""

    def __init__(self, convs: nn.Sequential, obs_shape: tuple[int, ...], out_features: int) -> None:
        super().__init__()
        self.convs = convs
        with torch.no_grad():
            n = self.convs(torch.zeros(1, *obs_shape)).numel()
        self.fc = nn.Linear(n, out_features)
        self.out_features = out_features

    def forward(self, obs: Tensor) -> Tensor:
        x = self.convs(obs.to(self.fc.weight.dtype) / 255.0)
        return F.relu(self.fc(x.flatten(1)))


class ImpalaStem(_ConvStem):
    """IMPALA's deep ResNet for pixels ``(C, H, W)`` uint8: 3 stages [16, 32, 32], then fc 256."""

    def __init__(self, obs_shape: tuple[int, ...], channels=(16, 32, 32), out_features: int = 256) -> None:
        layers, c_in = [], obs_shape[0]
        for c in channels:
            layers.append(nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1), nn.MaxPool2d(3, 2, padding=1)))
            layers += [_Residual(c), _Residual(c)]
            c_in = c
        super().__init__(nn.Sequential(*layers, nn.ReLU()), obs_shape, out_features)


class NatureStem(_ConvStem):
    """The DQN paper's small CNN (32 8x8/4, 64 4x4/2, 64 3x3/1, fc): several times cheaper than
    :class:`ImpalaStem` on a CPU, so pixel runs on a laptop reach useful frame counts."""

    def __init__(self, obs_shape: tuple[int, ...], out_features: int = 256) -> None:
        super().__init__(nn.Sequential(nn.Conv2d(obs_shape[0], 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2),
                                       nn.ReLU(), nn.Conv2d(64, 64, 3, 1), nn.ReLU()), obs_shape, out_features)


STEMS = ("auto", "impala", "nature", "mlp")


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class MLPStem(nn.Module):
    """Two layers (ReLU, or tanh as cleanrl's PPO) for flat vector observations."""

    def __init__(self, obs_dim: int, width: int, activation: str = "relu") -> None:
        super().__init__()
        act = ACTIVATIONS[activation]
        self.net = nn.Sequential(nn.Linear(obs_dim, width), act(), nn.Linear(width, width), act())
        self.out_features = width

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs.to(self.net[0].weight.dtype))


def _make_core(core: str, d: int, hidden_size: int, forget_bias: float, activation: str = "relu",
               r_max: float = 1.0) -> nn.Module:
    """The recurrent core named ``core`` (see ``CORES``) for inputs of width ``d``; ``activation``: the
    RTU's output nonlinearity (the other cores have their own); ``r_max``: the largest ``|λ|`` of the
    LRU's and the RTU's ring init (``RING_CORES``; the others have no ring)."""
    if core == "rtrl-elstm":
        return ELSTM(d, hidden_size, learning="rtrl", forget_bias=forget_bias)
    if core in ("tbptt-elstm", "bptt-elstm"):
        return ELSTM(d, hidden_size, learning="bptt", forget_bias=forget_bias)
    if core in ("rtrl-lru", "tbptt-lru", "rtrl-rtu", "tbptt-rtu", "rtrl-diag", "tbptt-diag"):
        rule, cell = core.split("-")
        learning = "rtrl" if rule == "rtrl" else "bptt"
        if cell == "rtu":
            return RTU(d, hidden_size, learning=learning, activation=activation, r_max=r_max)
        if cell == "lru":
            return LRU(d, hidden_size, learning=learning, r_max=r_max)
        return DiagonalLinearRNN(d, hidden_size, learning=learning)
    if core in ("rtrl2-lru", "tbptt2-lru", "bptt2-lru"):
        return TwoLayer("lru", d, hidden_size, learning="rtrl" if core.startswith("rtrl2") else "bptt")
    if core == "lstm":
        return ResettableLSTM(d, hidden_size)
    if core == "gru":
        return ResettableGRU(d, hidden_size)
    if core == "snap1-lstm":
        return SnAp1LSTM(d, hidden_size)
    if core == "uoro-lstm":
        return UOROLSTM(d, hidden_size)
    return Feedforward(d)


class Paired(nn.Module):
    """Two cores of one kind side by side: the actor's and the critic's (``critic="separate"``).

    Input, state and output are the last-dim concatenations ``[actor; critic]`` of theirs (both
    halves of equal width), so a learner keeps one slot per stream as for one core, and exact RTRL
    runs in each half unchanged: ``c = [c_a; c_c]``, each sensitivity tensor ``[S_a; S_c]``."""

    def __init__(self, make) -> None:
        super().__init__()
        self.actor, self.critic = make(), make()
        self.learning = self.actor.learning
        self.hidden_size = 2 * self.actor.hidden_size

    def initial_state(self, batch_size: int, sensitivities: Optional[bool] = None, device=None, dtype=None):
        a = self.actor.initial_state(batch_size, sensitivities, device, dtype)
        c = self.critic.initial_state(batch_size, sensitivities, device, dtype)
        # written into one buffer, not torch.cat: the first cat on the meta device (rtrl.budget sizes
        # a run there before it starts) loads torch's meta kernels, 1.2 s of every run's start-up
        both = a.map(lambda t: t.new_empty(*t.shape[:-1], 2 * t.shape[-1]))
        for whole, x, y in zip(_tensors(both), _tensors(a), _tensors(c)):
            whole[..., : x.shape[-1]], whole[..., x.shape[-1]:] = x, y
        return both

    def forward(self, x: Tensor, state: RecurrentState, reset: Optional[Tensor] = None):
        x_a, x_c = x.chunk(2, -1)
        s_a, s_c = _split_state(state)
        y_a, s_a = self.actor(x_a, s_a, reset)
        y_c, s_c = self.critic(x_c, s_c, reset)
        return torch.cat((y_a, y_c), -1), _cat_states(s_a, s_c)


def _cat_states(a: RecurrentState, b: RecurrentState) -> RecurrentState:
    sens = None if a.sensitivities is None else type(a.sensitivities)(
        *(torch.cat(pair, -1) for pair in zip(a.sensitivities, b.sensitivities)))
    return RecurrentState(torch.cat((a.c, b.c), -1), sens)


def _tensors(s: RecurrentState) -> list[Tensor]:
    return [s.c, *(s.sensitivities if s.sensitivities is not None else ())]


def _split_state(s: RecurrentState) -> tuple[RecurrentState, RecurrentState]:
    c_a, c_c = s.c.chunk(2, -1)
    if s.sensitivities is None:
        return RecurrentState(c_a), RecurrentState(c_c)
    halves = [t.chunk(2, -1) for t in s.sensitivities]
    kind = type(s.sensitivities)
    return (RecurrentState(c_a, kind(*(h[0] for h in halves))), RecurrentState(c_c, kind(*(h[1] for h in halves))))


CRITICS = ("shared", "separate")
INITS = ("default", "orthogonal")


class Agent(nn.Module):
    """Observation normaliser, encoder, core and heads. ``obs_shape`` of 3 dims is read as pixels ``(C, H, W)``.

    ``stem``: ``"auto"`` picks IMPALA's ResNet for pixels and an MLP for vectors; ``"nature"`` is
    the DQN CNN for pixels (cheaper on a CPU). ``activation``: the MLP stem's (``"relu"`` or ``"tanh"``),
    and the RTU core's output nonlinearity (tanh keeps the features of a long episode bounded).

    ``forget_bias`` is added to the eLSTM forget gate's bias at init (0 in the paper): a positive
    value makes the untrained state keep information longer. ``r_max``: the LRU's and the RTU's ring
    init draws ``|λ| ≤ r_max`` (1 in the paper; below 1, the untrained state forgets faster).

    ``obs_norm``: vector observations are normalised by running statistics (:mod:`rtrl.rl.normalize`)
    held in ``obs_rms``; the learner updates them (:meth:`update_obs_stats`), every copy of the agent
    receives them with the weights. ``critic="separate"``: the value head reads its own stem and
    core (:class:`Paired`), as cleanrl's and sb3-contrib's PPO do; ``"shared"``: one trunk for both.
    ``init="orthogonal"``: the stems' and heads' linear layers orthogonal with gains √2 (hidden),
    0.01 (policy) and 1 (value), biases 0 (cleanrl's ``layer_init``); the core keeps its own init.
    """

    def __init__(self, obs_shape: tuple[int, ...], num_actions: int, core: str = "rtrl-elstm",
                 hidden_size: int = 128, encoder_width: int = 64, forget_bias: float = 0.0,
                 stem: str = "auto", continuous: bool = False, obs_norm: bool = False, critic: str = "shared",
                 activation: str = "relu", init: str = "default", r_max: float = 1.0) -> None:
        super().__init__()
        if core not in CORES:
            raise ValueError(f"unknown core {core!r}; choose one of {CORES}")
        if num_actions < 1:
            raise ValueError(f"num_actions must be positive, got {num_actions}")
        self.obs_shape, self.num_actions, self.core_name = tuple(obs_shape), num_actions, core
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {STEMS}")
        for name, value, allowed in (("critic", critic, CRITICS), ("init", init, INITS),
                                     ("activation", activation, tuple(ACTIVATIONS))):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {allowed}")
        if len(obs_shape) not in (1, 3):
            raise ValueError(f"observations must be flat vectors (D,) or pixels (C, H, W), got shape {obs_shape}")
        pixels = len(obs_shape) == 3
        if stem == "auto":
            stem = "impala" if pixels else "mlp"
        if pixels != (stem in ("impala", "nature")):
            raise ValueError(f"stem {stem!r} does not fit observations of shape {obs_shape}: use 'impala' or "
                             "'nature' for pixels (C, H, W) and 'mlp' for vectors (D,)")
        if obs_norm and pixels:
            raise ValueError("observation normalisation is for vector observations; pixels are scaled by 1/255 in the "
                             "stem: leave --obs-norm off")
        self.separate_critic = critic == "separate"
        if self.separate_critic and core in ("snap1-lstm", "uoro-lstm"):
            raise ValueError(f"--critic separate is not supported with the {core} core (its sensitivities are not "
                             "per unit); use --critic shared")
        self.obs_rms = ObsNormalizer(self.obs_shape) if obs_norm else None

        def make_stem() -> nn.Module:
            if stem == "impala":
                return ImpalaStem(self.obs_shape)
            if stem == "nature":
                return NatureStem(self.obs_shape)
            return MLPStem(obs_shape[0], encoder_width, activation)

        self.stem = make_stem()
        self.critic_stem = make_stem() if self.separate_critic else None
        d = self.stem.out_features + 1
        make_core = lambda: _make_core(core, d, hidden_size, forget_bias, activation, r_max)  # noqa: E731
        self.core = Paired(make_core) if self.separate_critic else make_core()
        head_in = self.core.actor.hidden_size if self.separate_critic else self.core.hidden_size
        self.policy = nn.Linear(head_in, num_actions)
        self.value = nn.Linear(head_in, 1)
        self.continuous = bool(continuous)
        if self.continuous:  # the Gaussian's log-std: learned, state-independent (see rtrl.rl.dists)
            self.log_std = nn.Parameter(torch.zeros(num_actions))
        if init == "orthogonal":
            self._orthogonal_init()

    def _orthogonal_init(self) -> None:
        stems = [self.stem] + ([self.critic_stem] if self.critic_stem is not None else [])
        layers = [(m, math.sqrt(2)) for s in stems for m in s.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        for m, gain in layers + [(self.policy, 0.01), (self.value, 1.0)]:
            nn.init.orthogonal_(m.weight, gain)
            nn.init.zeros_(m.bias)

    @property
    def param_size(self) -> int:
        """Width of the policy's parameters (what rollouts store as logits): A, or 2A for a Gaussian."""
        return 2 * self.num_actions if self.continuous else self.num_actions

    def policy_params(self, y: Tensor) -> Tensor:
        """The core's output ``(..., H)`` -> logits ``(..., A)`` or Gaussian ``[mean; log_std]`` ``(..., 2A)``."""
        return self._policy(self._halves(y)[0])

    def _policy(self, y_pi: Tensor) -> Tensor:
        out = self.policy(y_pi)
        if self.continuous:
            out = torch.cat((out, self.log_std.expand_as(out)), -1)
        return out

    def _halves(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """What the policy head and the value head read of ``y``: its actor and critic halves (one
        split, whose gradient is one cat: a slice for each head would send back a zero-filled gradient
        of ``y``'s size each), or ``y`` twice (a shared trunk)."""
        return y.split(self.policy.in_features, -1) if self.separate_critic else (y, y)

    @property
    def exact_rtrl(self) -> bool:
        """The whole core learns by exact RTRL (not the 2-layer hybrids, whose bottom layer does not)."""
        return self.core_name.startswith("rtrl-")

    @property
    def carries_sensitivities(self) -> bool:
        """The learner keeps (exact or approximate) sensitivities per stream: RTRL (also the 2-layer
        hybrid's top layer), SnAp-1, UORO."""
        return self.exact_rtrl or self.core_name.startswith("rtrl2-") or self.core_name in ("snap1-lstm", "uoro-lstm")

    @property
    def whole_episodes(self) -> bool:
        """The core learns by BPTT over whole episodes: every rollout must be exactly one episode."""
        return self.core_name in WHOLE_EPISODE_CORES

    def initial_state(self, batch_size: int, learner: bool = True) -> RecurrentState:
        """Zero state; with sensitivities only for an RTRL core on the learner side."""
        w = self.policy.weight
        sens = learner and self.carries_sensitivities
        return self.core.initial_state(batch_size, sensitivities=sens, device=w.device, dtype=w.dtype)

    def value_of(self, y: Tensor) -> Tensor:
        """The core's output ``(..., H)`` -> the value ``(...)`` (the critic's half of a paired core)."""
        return self.value(self._halves(y)[1]).squeeze(-1)

    def core_input(self, obs: Tensor, prev_reward: Tensor, reset: Tensor) -> Tensor:
        """What the core reads at one step of ``n`` streams: ``obs (n, *obs_shape)``, ``prev_reward (n,)``,
        ``reset (n,)`` (bool, or 1.0 where ``obs`` starts an episode) -> ``x (n, D)``:
        ``[stem(norm(obs)); r]`` (with the critic's ``[critic_stem(norm(obs)); r]`` after it when separate)."""
        if self.obs_rms is not None:
            obs = self.obs_rms(obs)
        # the reward that arrived with an episode's first observation belongs to the previous episode
        first = reset if reset.dtype == torch.bool else reset > 0.5
        feats = self.stem(obs)
        r = prev_reward.clamp(-1, 1).to(feats.dtype).masked_fill(first, 0.0)[:, None]
        if self.critic_stem is None:
            return torch.cat((feats, r), -1)
        return torch.cat((feats, r, self.critic_stem(obs), r), -1)

    @torch.no_grad()
    def update_obs_stats(self, obs: Tensor) -> None:
        """Fold observations ``(..., *obs_shape)`` into the normaliser's statistics (nothing without one).
        The learner calls it once per update, after the gradient steps, so that a rollout and the
        update that learns from it see the same statistics."""
        if self.obs_rms is not None:
            self.obs_rms.update(obs.reshape(-1, *self.obs_shape))

    def features(self, obs: Tensor, prev_reward: Tensor, reset: Tensor, state: RecurrentState):
        """``obs (T, B, *obs_shape)``, ``prev_reward (T, B)``, ``reset (T, B)`` bool -> the core's
        output ``y (T, B, H)`` that the heads read, and the state after the segment."""
        T, B = obs.shape[:2]
        if tuple(obs.shape[2:]) != self.obs_shape:
            raise ValueError(f"observations of shape {tuple(obs.shape[2:])} given to an agent built for {self.obs_shape}")
        x = self.core_input(obs.reshape(T * B, *self.obs_shape), prev_reward.reshape(T * B), reset.reshape(T * B))
        if self.core_name == "none":  # the identity, paired or not (its state has width 0): skipped, it costs
            return x.view(T, B, -1), state  # a tenth of a feedforward PPO's minibatch step in chunks and cats
        return self.core(x.view(T, B, -1), state, reset)

    def forward(self, obs: Tensor, prev_reward: Tensor, reset: Tensor, state: RecurrentState):
        """``obs (T, B, *obs_shape)``, ``prev_reward (T, B)``, ``reset (T, B)`` bool ->
        ``logits (T, B, A)``, ``values (T, B)``, state after the segment."""
        y, state = self.features(obs, prev_reward, reset, state)
        y_pi, y_v = self._halves(y)
        return self._policy(y_pi), self.value(y_v).squeeze(-1), state

    @torch.no_grad()
    def act(self, obs: Tensor, prev_reward: Tensor, reset: Tensor, state: RecurrentState, greedy: bool = False):
        """One step for ``B`` streams: ``obs (B, ...)`` -> ``action (B,)`` (continuous: ``(B, A)``),
        ``logits (B, A)`` (continuous: ``[mean; log_std]`` ``(B, 2A)``), state.

        The value head is not run. Sampling is Gumbel-max: ``argmax(logits + g)`` with ``g`` standard
        Gumbel noise is a draw from ``softmax(logits)``, without normalising (cheaper than multinomial)."""
        y, state = self.features(obs[None], prev_reward[None], reset[None], state)
        logits = self.policy_params(y[0])
        return dists.sample(logits, self.continuous, greedy), logits, state

    @torch.no_grad()
    def final_value(self, obs: Tensor, prev_reward: Tensor, state: RecurrentState) -> Tensor:
        """``V`` of the observations ``obs (B, ...)`` at which time limits cut episodes, with the
        core's ``state`` carried on from those episodes (no reset): the bootstrap of a truncation."""
        reset = torch.zeros(obs.shape[0], dtype=torch.bool, device=obs.device)
        y, _ = self.features(obs[None], prev_reward[None], reset[None], state)
        return self.value_of(y[0])
