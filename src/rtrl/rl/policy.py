"""A trained agent's acting path as a module: ``load_agent(run_dir)`` and ``rtrl export``.

    policy = load_agent("runs/my-run")                      # a Policy (torch.nn.Module), CPU, eval mode
    state = policy.initial_state(batch_size=1)              # zeros: the state before an episode's first step
    action, state = policy.act(obs, state)                  # obs (B, *obs_shape); greedy by default
    action, state = policy.act(obs, state, prev_reward=r, first=is_first)   # what the agent was trained with

``Policy.forward(obs, prev_reward, first, state) -> (action, value, policy_params, next_state)`` is
one step of the inference path (no sensitivities, no gradients) with the recurrent state as an
explicit real tensor ``(B, state_size)``; ``rtrl export RUN_DIR --format torchscript|onnx`` writes
exactly this function. Its inputs:

* ``obs`` ``(B, *obs_shape)`` as the env adapter encodes it (float32 vectors, uint8 pixels);
* ``prev_reward`` ``(B,)`` float32: the reward that arrived with ``obs`` (0 on a first step);
* ``first`` ``(B,)`` float32, 1.0 where ``obs`` starts a new episode: the state is zeroed and the
  previous reward ignored there (the reset rule of :mod:`rtrl.rl.agent`);
* ``state`` ``(B, state_size)`` float32, zeros before the first step.

Outputs: ``action`` (greedy: ``argmax`` of the logits, int64 ``(B,)``; for Box actions the
Gaussian's mean, clipped to ``[-1, 1]`` and mapped onto the env's ``[low, high]``, ``(B, A)``),
``value`` ``(B,)``, ``policy_params`` (the logits ``(B, A)``, or the Gaussian's ``[mean; log_std]``
``(B, 2A)`` in the agent's normalised action space, to sample from), ``next_state``.

States, per core: the eLSTM's ``c`` (N); the LSTMs' ``[h; c]`` (2N); the GRU's ``h`` (N); the LRU's and RTU's complex
``c`` as real pairs ``(Re c_1, Im c_1, Re c_2, …)`` (2N for the LRU, ``hidden_size`` for the RTU):
ONNX has no complex type, so their step is written here in real arithmetic (the same numbers as
the complex one; tested); the feedforward agent carries a dummy state of size 1.

A streaming run's agent (``--algo stream-ac`` / ``stream-q``) gets :class:`StreamPolicy`, the same
step and signature over its own networks; both step their cores with :class:`CoreStep`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtrl.rl import dists
from rtrl.rl.agent import Agent, Feedforward, Paired, ResettableGRU, ResettableLSTM
from rtrl.rl.stream import StreamAgent, StreamState
from rtrl.rl.stream_q import EPSILON_END, QAgent
from rtrl.nn import ACTIVATIONS, TwoLayer
from rtrl.runs import RunError, describe_os_error
from rtrl.state import RecurrentState

FORMATS = ("torchscript", "onnx")


class CoreStep(nn.Module):
    """One step of one core (as :func:`rtrl.rl.agent._make_core` builds it: element-wise, one or two
    layers; LSTM; GRU; SnAp-1/UORO; feedforward) with its state an explicit real tensor
    ``(B, state_size)``: ``forward(x (B, D), s) -> (y (B, H), s)``. No sensitivities, no gradients.

    The LRU's and RTU's ``λ`` and ``γ`` are computed from the weights when the step is built (a
    snapshot: build a new one after changing the weights); their complex states travel as ``(re, im)``
    pairs, stepped in real arithmetic (ONNX has no complex type)."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self._core = [core]  # a plain list, not a submodule: its parameters are the agent's
        self.kind = ("none" if isinstance(core, Feedforward) else "lstm" if isinstance(core, ResettableLSTM)
                     else "gru" if isinstance(core, ResettableGRU) else "dense" if hasattr(core, "_step")
                     else "elementwise")
        self._layers = [core.bottom, core.top] if isinstance(core, TwoLayer) else [core]
        c = core.initial_state(1, sensitivities=False).c
        self.state_size = 2 * c.shape[-1] if c.is_complex() else c.shape[-1]
        for i, layer in enumerate(self._layers if self.kind == "elementwise" else []):
            if layer.cell.complex_state:  # λ and γ depend on the weights only: computed once, in float64
                theta = layer.cell.weight_hh.detach().double()
                e_nu, phase = torch.exp(theta[0]), torch.exp(theta[1])
                lam = torch.polar(torch.exp(-e_nu), phase)
                gamma = torch.sqrt(-torch.expm1(-2 * e_nu)) if layer.cell.normalise else torch.ones_like(e_nu)
                dtype = layer.cell.weight_ih.dtype
                self.register_buffer(f"_lam_re{i}", lam.real.to(dtype))
                self.register_buffer(f"_lam_im{i}", lam.imag.to(dtype))
                self.register_buffer(f"_gamma{i}", gamma.to(dtype))

    def forward(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        core = self._core[0]
        if self.kind == "none":
            return x, s
        if self.kind == "lstm":
            h, c = s.chunk(2, -1)
            h, c = core.cell(x, (h, c))
            return h, torch.cat((h, c), -1)
        if self.kind == "gru":
            h = core.cell(x, s)
            return h, h
        if self.kind == "dense":  # SnAp-1 / UORO: a dense LSTM or RNN, state [h; c] or h
            s, _ = core._step(F.linear(x, core.weight_ih, core.bias), s)
            return s[:, : core.hidden_size], s
        states, ys = [], x
        widths = [2 * layer.state_size if layer.cell.complex_state else layer.state_size for layer in self._layers]
        for i, (layer, s_i) in enumerate(zip(self._layers, s.split(widths, -1))):
            ys, c = self._layer_step(i, layer, ys, s_i)
            states.append(c)
        return ys, torch.cat(states, -1)

    def _layer_step(self, i: int, layer: nn.Module, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """One step of element-wise layer ``i``: its output and its state (real; complex as (re, im) pairs)."""
        cell = layer.cell
        p = F.linear(x, cell.weight_ih, cell.bias).unflatten(-1, (cell.num_gates, layer.state_size))
        theta = cell.weight_hh
        if not cell.complex_state:  # the eLSTM: its own step and output gate
            c = cell.step(s, p, theta)
            return layer._readout(x, c), c
        # LRU / RTU: c_t = λ c_{t-1} + γ (p_re + i p_im) in (re, im) pairs; λ, γ (1 for the RTU) from __init__
        lam_re, lam_im, gamma = (getattr(self, f"{name}{i}") for name in ("_lam_re", "_lam_im", "_gamma"))
        q_re, q_im = gamma * p[:, 0], gamma * p[:, 1]
        c = s.unflatten(-1, (layer.state_size, 2))
        c_re, c_im = c[..., 0], c[..., 1]
        c = torch.stack((lam_re * c_re - lam_im * c_im + q_re, lam_re * c_im + lam_im * c_re + q_im), -1).flatten(-2)
        if hasattr(layer, "readout"):  # the LRU: y = D x + Re(C c), C acting on the interleaved pairs
            return layer.skip(x) + F.linear(c, layer.readout.weight), c
        return ACTIVATIONS[layer.activation](c), c  # the RTU: g((Re c_1, Im c_1, ...))


def real_state(state: RecurrentState) -> Tensor:
    """A core's state ``c`` ``(B, N)`` as the real tensor :class:`CoreStep` carries (complex units as
    (re, im) pairs; a stateless core's as one zero column, the exported policies' dummy state)."""
    c = state.c
    if c.is_complex():
        c = torch.view_as_real(c).flatten(-2)
    return c if c.shape[-1] else torch.zeros(c.shape[0], 1, dtype=c.dtype)


class _Acting(nn.Module):
    """What both exported policies share: the env's action bounds, ``initial_state`` and ``act``.
    A subclass sets ``obs_shape``, ``continuous``, ``num_actions``, ``state_size`` and defines
    ``forward(obs, prev_reward, first, state) -> (action, value, policy_params, next_state)``."""

    obs_shape: tuple[int, ...]
    continuous: bool
    num_actions: int
    state_size: int

    def _set_bounds(self, action_low: Any, action_high: Any) -> None:
        n = self.num_actions if self.continuous else 0
        low = torch.as_tensor(np.asarray(action_low if action_low is not None else [-1.0] * n, np.float64)).float()
        high = torch.as_tensor(np.asarray(action_high if action_high is not None else [1.0] * n, np.float64)).float()
        bounded = torch.isfinite(low) & torch.isfinite(high)
        self.register_buffer("_low", torch.where(bounded, low, torch.zeros_like(low)))
        self.register_buffer("_span", torch.where(bounded, high - low, torch.zeros_like(low)))
        self.register_buffer("_bounded", bounded)

    def env_action(self, action: Tensor) -> Tensor:
        """The agent's action in the env's terms: discrete as it is; continuous clipped to ``[-1, 1]`` and
        mapped onto ``[low, high]`` where bounded (as the env adapter does)."""
        if not self.continuous:
            return action
        return torch.where(self._bounded, self._low + (action.clamp(-1, 1) + 1) * 0.5 * self._span, action)

    def sample(self, params: Tensor) -> Tensor:
        """An action drawn from the policy with parameters ``params`` (the mode it was trained in)."""
        return dists.sample(params, self.continuous)

    def initial_state(self, batch_size: int = 1) -> Tensor:
        """The state before an episode's first step: zeros ``(batch_size, state_size)``."""
        return torch.zeros(batch_size, self.state_size)

    @torch.no_grad()
    def act(self, obs: Any, state: Tensor, prev_reward: Any = None, first: Any = None,
            greedy: bool = True) -> tuple[Tensor, Tensor]:
        """``(action, next_state)`` for ``obs`` ``(B, *obs_shape)`` (a numpy array or a tensor).

        ``prev_reward`` ``(B,)`` (default 0) and ``first`` ``(B,)`` bool (default False: start an
        episode from :meth:`initial_state` instead) as in :meth:`forward`. ``greedy=False`` samples from
        the policy (the mode the agent was trained in)."""
        obs = torch.as_tensor(np.asarray(obs))
        if tuple(obs.shape[1:]) != tuple(self.obs_shape):
            raise ValueError(f"observations of shape {tuple(obs.shape)} given to a policy for (B, *{self.obs_shape})")
        B = obs.shape[0]
        r = torch.zeros(B) if prev_reward is None else torch.as_tensor(np.asarray(prev_reward), dtype=torch.float32)
        f = torch.zeros(B) if first is None else torch.as_tensor(np.asarray(first)).to(torch.float32)
        action, _, params, state = self(obs, r, f, state)
        if not greedy:
            action = self.env_action(self.sample(params))
        return action, state


class Policy(_Acting):
    """One acting step of an :class:`Agent`, its recurrent state an explicit real tensor (see module doc).

    A snapshot for inference: the LRU's and RTU's ``λ`` and ``γ`` are computed from the weights when
    the policy is built (build a new one after changing the agent's weights).

    ``action_low``/``action_high``: the env's Box bounds (flat; ``±inf`` where unbounded) to map a
    continuous action from the agent's normalised space; ignored for discrete actions. The agent is
    put in eval mode with its gradients off: pass a copy of one you still train."""

    def __init__(self, agent: Agent, action_low: Any = None, action_high: Any = None) -> None:
        super().__init__()
        self.agent = agent.eval().requires_grad_(False)
        self.obs_shape, self.continuous, self.num_actions = agent.obs_shape, agent.continuous, agent.num_actions
        core = agent.core
        # a paired core (separate critic) steps its two halves alike, each half of the input and state
        self._steps = nn.ModuleList(CoreStep(c) for c in ([core.actor, core.critic] if isinstance(core, Paired)
                                                          else [core]))
        self.state_size = max(sum(step.state_size for step in self._steps), 1)
        self._set_bounds(action_low, action_high)

    @property
    def dtype(self) -> torch.dtype:
        return self.agent.policy.weight.dtype

    def forward(self, obs: Tensor, prev_reward: Tensor, first: Tensor,
                state: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        agent = self.agent
        keep = 1.0 - first.to(torch.float32)
        x = agent.core_input(obs, prev_reward, first)  # normalises obs with the agent's statistics
        y, state = self._core_step(x, state * keep[:, None])
        params = agent.policy_params(y)
        value = agent.value_of(y)
        return self.env_action(dists.sample(params, self.continuous, greedy=True)), value, params, state

    def _core_step(self, x: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        if self._steps[0].kind == "none":
            return x, s
        if len(self._steps) == 1:
            return self._steps[0](x, s)
        outs = [step(x_k, s_k) for step, x_k, s_k in zip(self._steps, x.chunk(2, -1), s.chunk(2, -1))]
        return torch.cat([y for y, _ in outs], -1), torch.cat([c for _, c in outs], -1)

    def real_state(self, state: RecurrentState) -> Tensor:
        """An :class:`Agent`'s state as this module's real tensor (complex units as (re, im) pairs)."""
        return real_state(state)


class StreamPolicy(_Acting):
    """One acting step of a streaming agent (:class:`rtrl.rl.stream.StreamAgent`, or stream Q(λ)'s
    :class:`rtrl.rl.stream_q.QAgent`) with the signature of :class:`Policy`: ``forward(obs, prev_reward,
    first, state) -> (action, value, policy_params, next_state)``; ``prev_reward`` is not read (the
    streaming networks take the observation alone). ``state`` is the cores' real states side by side
    (a fused RTU's one layer; else the actor's, then the critic's). For Q(λ): ``policy_params`` are the
    action values ``Q (B, A)``, ``value`` is ``max_a Q``, the action ``argmax_a Q``, and ``act(...,
    greedy=False)`` is ε-greedy with ε = 0.01 (as ``rtrl eval`` runs it). As :class:`Policy`, it puts
    the agent in eval mode with its gradients off: pass a copy of one you still train."""

    def __init__(self, agent: StreamAgent | QAgent, action_low: Any = None, action_high: Any = None) -> None:
        super().__init__()
        self.agent = agent.eval().requires_grad_(False)
        self.obs_shape, self.continuous, self.num_actions = agent.obs_shape, agent.continuous, agent.num_actions
        self.q_values = isinstance(agent, QAgent)
        cores = [agent.core] if self.q_values else list(agent.cores)
        self._steps = nn.ModuleList(CoreStep(c) for c in cores)
        self._widths = [step.state_size for step in self._steps]
        self.state_size = max(sum(self._widths), 1)
        self._set_bounds(action_low, action_high)

    @property
    def dtype(self) -> torch.dtype:
        return self.agent.dtype

    def forward(self, obs: Tensor, prev_reward: Tensor, first: Tensor,
                state: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        agent = self.agent
        x = agent.normalise(obs)
        s = state * (1.0 - first.to(torch.float32))[:, None]
        if self._steps[0].kind == "none":
            ys = [x] * len(self._steps)
        else:
            outs = [step(x, s_k) for step, s_k in zip(self._steps, s.split(self._widths, -1))]
            ys, s = [y for y, _ in outs], torch.cat([c for _, c in outs], -1)
        if self.q_values:
            q = agent.q(ys[0])
            return q.argmax(-1), q.max(-1).values, q, s
        y_a, y_c = ys[0].chunk(2, -1) if agent.fused else ys
        params, value = agent.actor(y_a), agent.critic(y_c)[:, 0]
        return self.env_action(dists.sample(params, self.continuous, greedy=True)), value, params, s

    def sample(self, params: Tensor) -> Tensor:
        """Actor-critic: drawn from the policy. Q(λ): ε-greedy on the action values ``params (B, A)``."""
        if not self.q_values:
            return super().sample(params)
        explore = torch.rand(params.shape[0]) < EPSILON_END
        return torch.where(explore, torch.randint(self.num_actions, (params.shape[0],)), params.argmax(-1))

    def real_state(self, state: StreamState) -> Tensor:
        """A streaming agent's state (one :class:`RecurrentState` per core) as this module's real tensor."""
        if self._steps[0].kind == "none":
            return torch.zeros(state[0].c.shape[0], 1, dtype=state[0].c.dtype)
        return torch.cat([real_state(s) for s in state], -1)


def run_spec(run_dir: Path, cfg):
    """The :class:`EnvSpec` of a run: its ``env_spec.json``, or (older runs) asked of the env."""
    from rtrl.rl.config import EnvSpec

    spec_file = run_dir / "env_spec.json"
    if spec_file.is_file():
        return EnvSpec.from_json(json.loads(spec_file.read_text()))
    from rtrl.rl.envs import make_env

    probe = make_env(cfg.env, 1)
    try:
        return EnvSpec.of(probe)
    finally:
        probe.close()


def load_agent(run_dir: str | Path, checkpoint: str = "latest") -> Policy | StreamPolicy:
    """The acting policy of a run folder's checkpoint (``"latest"``, or ``"best"``), on the CPU: a
    :class:`Policy` for R2AC and PPO runs, a :class:`StreamPolicy` for stream-ac and stream-q runs."""
    from rtrl.rl.config import CHECKPOINT_KIND, STREAM_ALGOS, TrainConfig, build_agent
    from rtrl.runs import RunError, load_checkpoint, load_newest

    run_dir = Path(run_dir)
    cfg_file = run_dir / "config.json"
    if not cfg_file.is_file():
        raise RunError(f"{run_dir} is not a run folder (no config.json)")
    cfg = TrainConfig(**json.loads(cfg_file.read_text()))
    kind = CHECKPOINT_KIND.get(cfg.algo)
    if checkpoint == "best":
        ckpt = load_checkpoint(run_dir / "checkpoints" / "best.pt", kind)
    elif checkpoint == "latest":
        ckpt = load_newest(run_dir / "checkpoints", kind)
    else:
        raise ValueError(f"checkpoint must be 'latest' or 'best', got {checkpoint!r}")
    spec = run_spec(run_dir, cfg)
    agent = build_agent(cfg, spec)
    agent.load_state_dict(ckpt["agent"])
    acting = StreamPolicy if cfg.algo in STREAM_ALGOS else Policy
    return acting(agent, spec.action_low or None, spec.action_high or None)


def example_inputs(policy: Policy | StreamPolicy, batch_size: int = 2) -> tuple[Tensor, ...]:
    dtype = policy.dtype
    obs = torch.zeros(batch_size, *policy.obs_shape, dtype=torch.uint8 if len(policy.obs_shape) == 3 else dtype)
    return obs, torch.zeros(batch_size), torch.ones(batch_size), policy.initial_state(batch_size)


INPUTS, OUTPUTS = ("obs", "prev_reward", "first", "state"), ("action", "value", "policy_params", "next_state")


def export(run_dir: str | Path, fmt: str, out: Optional[str | Path] = None, checkpoint: str = "latest") -> Path:
    """Write a run's acting policy (:meth:`Policy.forward`) as TorchScript (``policy.pt``) or ONNX
    (``policy.onnx``, opset 17, a dynamic batch axis); returns the file's path. The ``.json`` beside it
    lists the file's inputs: feed an ONNX session by those names (a streaming policy reads no reward,
    and ONNX drops an input its graph never reads)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    policy = load_agent(run_dir, checkpoint)
    out = Path(out) if out else Path(run_dir) / ("policy.pt" if fmt == "torchscript" else "policy.onnx")
    check_output_path(out)  # before the tracing, and the same one line for every format
    inputs = example_inputs(policy)
    if fmt == "onnx":
        try:
            import onnx
        except ImportError:
            raise ImportError("--format onnx needs the onnx package: pip install 'rtrl[export]' "
                              "(or pip install onnx onnxscript)") from None
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")  # written whole, then renamed: never half a file
    try:
        with torch.no_grad():
            if fmt == "torchscript":
                torch.jit.trace(policy, inputs, check_trace=False).save(str(tmp))
            else:
                batch = {0: "batch"}
                io = dict(input_names=list(INPUTS), output_names=list(OUTPUTS),
                          dynamic_axes={n: batch for n in INPUTS + OUTPUTS})
                torch.onnx.export(policy, inputs, str(tmp), **io, opset_version=17, dynamo=False)
        names = list(INPUTS)
        if fmt == "onnx":  # ONNX drops an input the graph never reads (a streaming policy's prev_reward)
            names = [i.name for i in onnx.load(str(tmp)).graph.input]
        os.replace(tmp, out)
    except OSError as e:
        raise RunError(describe_os_error(e, out)) from None
    except RuntimeError as e:  # torch's writers report a file they cannot open as a RuntimeError
        if "open" not in str(e).lower() and "write" not in str(e).lower():
            raise
        raise RunError(f"cannot write {out}: {str(e).splitlines()[0][:200]}; choose another --out") from None
    finally:
        tmp.unlink(missing_ok=True)
    meta = dict(format=fmt, inputs=names, outputs=list(OUTPUTS), obs_shape=list(policy.obs_shape),
                state_size=policy.state_size, continuous=policy.continuous, num_actions=policy.num_actions,
                core=policy.agent.core_name)
    try:
        out.with_suffix(out.suffix + ".json").write_text(json.dumps(meta, indent=2) + "\n")
    except OSError as e:
        raise RunError(describe_os_error(e, out.with_suffix(out.suffix + ".json"))) from None
    return out


def check_output_path(out: Path) -> None:
    """Raise a one-line ``RunError`` if ``out`` cannot be written as a file: its folder missing or
    not a folder, ``out`` itself a folder, or the folder not writable."""
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        what = "is a file, not a folder" if parent.exists() else "does not exist"
        raise RunError(f"cannot write {out}: the folder {parent} {what}; create it, or choose another --out")
    if out.is_dir():
        raise RunError(f"cannot write {out}: it is a folder; give a file name, "
                       f"e.g. --out {out / 'policy.pt'}")
    if not os.access(parent, os.W_OK):
        raise RunError(f"cannot write {out}: the folder {parent} is not writable for you; "
                       "choose another --out")
