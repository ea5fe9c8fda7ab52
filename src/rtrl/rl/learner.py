"""The learner: V-trace actor-critic updates, with exact RTRL sensitivities kept per stream.

A rollout is one segment of ``M`` steps of ``B`` streams (time-major), plus the observation that
follows it for the bootstrap value:

    obs[0..M], reward[0..M], done[0..M]     reward[t]: received on arriving at obs[t];
                                            done[t]: obs[t] is the first of a new episode
    action[0..M-1], logits[0..M-1]          what the behaviour policy did at obs[t] (continuous actions:
                                            action (M, B, A) floats, logits the Gaussian's [mean; log_std])
    streams (B,)                            which stream each column is
    state                                   the actor's core state before obs[0]
    truncated[0..M], final_value[0..M]      truncated[t]: the episode that ended on arriving at obs[t] was
                                            cut by a time limit; final_value[t] = V(its last observation),
                                            computed by the actor (0 elsewhere): the bootstrap of that
                                            transition's target, r + γ·final_value (a termination gets r)

For an RTRL core the learner keeps its own state ``(c, S)`` per stream and advances it with the
newest weights, segment after segment, in the order each stream produced them (DESIGN.md §3):
actors carry only ``c``. Other cores start each segment from the actor's (detached) state.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import Tensor

from rtrl.state import RecurrentState
from rtrl.rl.agent import Agent
from rtrl.rl.normalize import RewardScaler
from rtrl.rl.optim import clip_grad_norm, make_optimizer
from rtrl.rl.vtrace import actor_critic_loss


@dataclass
class Rollout:
    obs: Tensor  # (M+1, B, *obs_shape)
    reward: Tensor  # (M+1, B) float32
    done: Tensor  # (M+1, B) bool
    action: Tensor  # (M, B) int64
    logits: Tensor  # (M, B, A) behaviour logits
    streams: Tensor  # (B,) int64
    state: RecurrentState  # actor's core state before obs[0]
    truncated: Optional[Tensor] = None  # (M+1, B) bool; None: no truncation anywhere
    final_value: Optional[Tensor] = None  # (M+1, B): V(final obs) where truncated, else 0

    @property
    def length(self) -> int:
        return self.action.shape[0]

    def bootstrap_rewards(self, rewards: Tensor, discount: float) -> Tensor:
        """``rewards (M, B)`` of the transitions, plus ``γ·V(final obs)`` where a time limit cut the
        episode (the discount of that transition is 0, as for any episode end)."""
        if self.truncated is None:  # (no test for "none truncated here": it would cost a host sync on a GPU)
            return rewards
        fv = self.final_value[1:].to(rewards.dtype)
        return rewards + discount * torch.where(self.truncated[1:], fv, torch.zeros_like(fv))

    def to(self, device: torch.device) -> "Rollout":
        """The same rollout on ``device`` (itself if it is there already)."""
        if self.obs.device == device:
            return self
        move = lambda t: t.to(device, non_blocking=True) if t is not None else None  # noqa: E731
        return Rollout(move(self.obs), move(self.reward), move(self.done), move(self.action), move(self.logits),
                       move(self.streams), self.state.map(move), move(self.truncated), move(self.final_value))

    def check(self, num_streams: int) -> None:
        M, B = self.action.shape[:2]
        if M < 1:
            raise ValueError("a rollout needs at least one step (unroll length M >= 1)")
        for name, t, shape in (("obs", self.obs, (M + 1, B)), ("reward", self.reward, (M + 1, B)),
                               ("done", self.done, (M + 1, B)), ("logits", self.logits, (M, B)),
                               ("streams", self.streams, (B,))):
            if tuple(t.shape[: len(shape)]) != shape:
                raise ValueError(f"rollout.{name} has shape {tuple(t.shape)}, expected {shape} + ...")
        for name in ("obs", "reward", "logits", "final_value"):
            t = getattr(self, name)
            if t is None:
                continue
            if t.is_floating_point() and not torch.isfinite(t).all():
                if name == "logits":  # the actor acted on finite inputs (NaN from an env reads as 0 there)
                    raise DivergedError(WEIGHTS_DIVERGED)
                raise NonFiniteError(f"rollout.{name} holds NaN/Inf (streams {self.streams.tolist()}): "
                                     "update skipped, weights kept", source="environment")
        if self.streams.min() < 0 or self.streams.max() >= num_streams or self.streams.unique().numel() != B:
            raise ValueError(f"rollout.streams must be {B} distinct ids in [0, {num_streams})")


class NonFiniteError(FloatingPointError):
    """A loss or gradient was NaN/Inf: the update was skipped and the weights kept.
    ``source``: "environment" (NaN/Inf in what the envs returned), "loss" or "gradient"."""

    def __init__(self, message: str, source: str = "loss") -> None:
        super().__init__(message)
        self.source = source


class DivergedError(FloatingPointError):
    """Training diverged (values no return can reach, weights that give NaN/Inf, or updates skipped
    again and again): the run stops; the message says what to change."""


MAX_SKIPS_IN_ROW = 10  # skipped updates in a row after which a run stops instead of skipping on
WEIGHTS_DIVERGED = ("training diverged: the agent's weights give NaN/Inf on finite observations; start a new run "
                    "with a lower --lr or --grad-clip")


@contextmanager
def nan_means_diverged() -> Iterator[None]:
    """For a forward pass on inputs known to be finite: a NaN/Inf error raised in the block comes
    from the agent's own weights (the core refuses a non-finite input: "NaN or Inf"), so it is
    raised as ``DivergedError``, saying what to change. (NaN logits raise nothing where actions are
    drawn by Gumbel-max: :meth:`Rollout.check` and PPO's collector catch those.)"""
    try:
        yield
    except (ValueError, RuntimeError) as e:
        if "nan" not in str(e).lower():
            raise
        raise DivergedError(WEIGHTS_DIVERGED) from None


def stop_if_diverging(err: NonFiniteError, in_row: int, lr: float, grad_clip: float) -> None:
    """After ``MAX_SKIPS_IN_ROW`` skipped updates in a row, stop the run (``DivergedError``) with a
    line saying what to change; fewer are skipped with a warning (the caller's)."""
    if in_row < MAX_SKIPS_IN_ROW:
        return
    if err.source == "environment":
        fix = "the environment keeps returning NaN/Inf observations or rewards: fix it, or wrap it to replace them"
    else:
        fix = f"training diverged: start a new run with a lower --lr (now {lr:g}) or --grad-clip (now {grad_clip:g})"
    raise DivergedError(f"{in_row} updates in a row were skipped for a non-finite {err.source}; {fix}") from None


def zero_non_finite(t: Tensor) -> Tensor:
    """``t`` with NaN/Inf replaced by 0, for *acting* on a faulty environment's output: the rollout
    keeps the raw values, so the learner sees them and skips that update."""
    if not t.is_floating_point() or bool(torch.isfinite(t).all()):
        return t
    return torch.where(torch.isfinite(t), t, torch.zeros((), dtype=t.dtype))


def check_hyper_parameters(cfg) -> None:
    """The loss and optimiser settings every trainer reads (``grad_clip``, ``discount``, the loss
    weights), checked where they are read: a negative clip is gradient ascent, 0 freezes the run."""
    if not (cfg.grad_clip > 0 and math.isfinite(cfg.grad_clip)):
        raise ValueError(f"grad_clip must be a positive number, got {cfg.grad_clip}")
    if not 0 < cfg.discount <= 1:
        raise ValueError(f"discount must be in (0, 1], got {cfg.discount}")
    for name in ("value_weight", "entropy_weight", "reward_clip"):
        v = getattr(cfg, name)
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number >= 0, got {v}")
    if not (cfg.lr >= 0 and math.isfinite(cfg.lr)):
        raise ValueError(f"lr must be a non-negative number, got {cfg.lr}")
    # RMSProp's: a negative eps flips the step's sign, alpha >= 1 never forgets (or grows without end)
    if not (cfg.rms_eps > 0 and math.isfinite(cfg.rms_eps)):
        raise ValueError(f"rms_eps must be a positive number, got {cfg.rms_eps}")
    if not 0 <= cfg.rms_alpha < 1:
        raise ValueError(f"rms_alpha must be in [0, 1), got {cfg.rms_alpha}")


def value_bound(cfg) -> float:
    """Ten times the largest |return| that rewards clipped to ``±reward_clip`` allow with this
    discount (``inf`` without clipping or discounting): a value estimate beyond it has diverged."""
    if cfg.reward_clip > 0 and cfg.discount < 1:
        return 10 * cfg.reward_clip / (1 - cfg.discount)
    return math.inf


def check_values(values: Tensor | float, cfg, update: int) -> None:
    """Raise ``DivergedError`` if a value estimate (``values``, or the largest ``|value|`` as a float)
    is beyond :func:`value_bound`."""
    bound = value_bound(cfg)
    if isinstance(values, Tensor):
        values = float(values.detach().abs().max()) if values.numel() else 0.0
    top = values
    if top > bound:  # NaN compares False: the loss guard handles it
        raise DivergedError(
            f"training diverged at update {update}: value estimates reach {top:.3g}, but rewards clipped to "
            f"±{cfg.reward_clip:g} with discount {cfg.discount:g} keep returns within ±{bound / 10:.3g}; start a new "
            f"run with a lower --lr (now {cfg.lr:g}) or --grad-clip (now {cfg.grad_clip:g})")


@dataclass
class LearnerConfig:
    optimizer: str = "rmsprop"  # or "adam"
    lr: float = 6e-4
    rms_eps: float = 0.01
    rms_alpha: float = 0.99
    grad_clip: float = 40.0
    discount: float = 0.99
    value_weight: float = 0.5
    entropy_weight: float = 0.01
    reward_clip: float = 1.0  # rewards clamped to [-c, c] in the loss only; 0 = no clipping
    reward_scale: bool = False  # divide rewards by the running std of each stream's discounted return (then clip)
    total_updates: int = 0  # for the linear learning-rate decay; 0 = constant


class Learner:
    """Owns the optimiser, the schedule and (for RTRL) the per-stream state bank."""

    def __init__(self, agent: Agent, cfg: LearnerConfig, num_streams: int) -> None:
        check_hyper_parameters(cfg)
        self.agent, self.cfg, self.num_streams = agent, cfg, num_streams
        self.device = agent.policy.weight.device  # the learner works where the agent's weights are
        self.opt = make_optimizer(cfg.optimizer, agent.parameters(), cfg.lr, cfg.total_updates,
                                  rms_alpha=cfg.rms_alpha, rms_eps=cfg.rms_eps)
        self.updates = 0
        self.skipped = 0
        self.bank: Optional[RecurrentState] = agent.initial_state(num_streams) if agent.carries_sensitivities else None
        self._top_value = torch.zeros((), device=self.device)  # the largest |value| of the last backward
        # rollouts of a stream reach the learner in order (one actor's, one at a time), so each stream's
        # discounted return runs on as it would in the envs
        self.reward_scaler = RewardScaler(num_streams).to(self.device) if cfg.reward_scale else None

    def reset_streams(self) -> None:
        """Forget every stream's state (they all start new episodes, e.g. after a restart)."""
        if self.bank is not None:
            self.bank = self.bank.map(torch.zeros_like)
        if self.reward_scaler is not None:
            self.reward_scaler.returns.zero_()

    def update(self, r: Rollout) -> dict[str, float]:
        """One optimiser step on a rollout. Raises ``NonFiniteError`` (weights untouched) on NaN/Inf."""
        stats, state = self.backward(r)
        self.step(r, state, stats)
        return stats

    def backward(self, r: Rollout) -> tuple[dict[str, Tensor], RecurrentState]:
        """Loss of a rollout and its gradients in ``.grad`` (exact RTRL ones for an RTRL core);
        returns the statistics (0-d tensors, on the learner's device: :meth:`step` reads them all
        in one transfer, then checks the loss, the values and the gradient) and the state after the
        segment (not stored yet). The rollout's checks run on it where the actors made it (the CPU)."""
        try:
            r.check(self.num_streams)
        except NonFiniteError:
            self.skipped += 1
            raise
        cfg, agent, M = self.cfg, self.agent, r.length
        if agent.whole_episodes and not (r.done[0].all() and r.done[M].all()):
            raise ValueError(f"the {agent.core_name} core learns by BPTT over whole episodes: every rollout must be "
                             "exactly one episode; set --unroll to the (fixed) episode length")
        state0 = self._gather(r.streams) if self.bank is not None else r.state.detach()
        r = r.to(self.device)
        with nan_means_diverged():  # r.check found the inputs finite
            logits, values, state = agent(r.obs[:M], r.reward[:M], r.done[:M], state0.map(
                lambda t: t.to(self.device, non_blocking=True)))
        with torch.no_grad():  # the bootstrap V(obs[M]) is a target: no gradient, no sensitivities
            _, v_boot, _ = agent(r.obs[M:], r.reward[M:], r.done[M:], RecurrentState(state.c.detach()))
        rewards = r.reward[1:]
        if self.reward_scaler is not None:
            rewards = self.reward_scaler(r.reward, r.done, cfg.discount, r.streams)[1:]
        if cfg.reward_clip > 0:
            rewards = rewards.clamp(-cfg.reward_clip, cfg.reward_clip)
        rewards = r.bootstrap_rewards(rewards, cfg.discount)  # bootstrap through time limits
        discounts = cfg.discount * (~r.done[1:]).to(values.dtype)
        losses = actor_critic_loss(logits, values, r.action, r.logits, rewards, discounts, v_boot[0],
                                   cfg.value_weight, cfg.entropy_weight, agent.continuous)
        self.opt.zero_grad()
        losses.total.backward()  # a NaN loss gives NaN gradients: step() skips them, having read the loss
        values = values.detach()
        self._top_value = values.abs().max() if values.numel() else values.new_zeros(())
        stats = dict(loss=losses.total.detach(), policy_loss=losses.policy.detach(),
                     value_loss=losses.value.detach(), entropy_loss=losses.entropy.detach(),
                     mean_value=values.mean())
        return stats, state

    def step(self, r: Rollout, state: RecurrentState, stats: dict) -> None:
        """Clip, check and apply the gradients from ``backward``; store each stream's new state.
        ``stats`` become floats in place (with ``grad_norm`` and ``lr``): the update's one host sync."""
        grad_norm = clip_grad_norm(self.agent.parameters(), self.cfg.grad_clip)
        names = list(stats)
        read = torch.stack([torch.as_tensor(stats[k]).detach().to(self.device, torch.float64) for k in names]
                           + [grad_norm.detach().double(), self._top_value.double()]).tolist()
        stats.update(zip(names, read))
        norm, top = read[-2:]
        check_values(top, self.cfg, self.updates)
        if not math.isfinite(stats["loss"]):
            self.opt.zero_grad()
            self.skipped += 1
            raise NonFiniteError(f"non-finite loss ({stats['loss']}) at update {self.updates}: "
                                 "update skipped, weights kept")
        if not math.isfinite(norm):
            self.opt.zero_grad()
            self.skipped += 1
            raise NonFiniteError(f"non-finite gradient norm at update {self.updates}: update skipped, weights kept",
                                 source="gradient")
        self.opt.step()
        self.opt.advance()
        self.updates += 1
        self.agent.update_obs_stats(r.obs[: r.length])  # published to the actors with the weights
        if self.bank is not None:  # the carried-out (c_M, S_M) of every stream in this rollout
            self._scatter(r.streams, state.detach())
        stats.update(grad_norm=norm, lr=self.opt.lr)

    def _gather(self, streams: Tensor) -> RecurrentState:
        """The banked state of ``streams``: a view when they are a run of consecutive ids (one
        actor's rollout, the usual case), a copy otherwise."""
        span = _span(streams)
        return self.bank.map(lambda t: t[span] if span is not None else t[streams])

    def _scatter(self, streams: Tensor, state: RecurrentState) -> None:
        """Store ``state`` as the banked state of ``streams``. A rollout of every stream in order
        (a synchronous actor) replaces the bank without a copy."""
        span = _span(streams)
        if span == slice(0, self.num_streams):
            self.bank = state
            return
        for bank_t, new_t in zip(_leaves(self.bank), _leaves(state)):
            if span is not None:
                bank_t[span] = new_t
            else:
                bank_t[streams] = new_t

    def state_dict(self) -> dict:
        d = dict(optimizer=self.opt.state_dict(), updates=self.updates,
                 skipped=self.skipped)
        if self.bank is not None:
            d["bank"] = list(_leaves(self.bank))
        if self.reward_scaler is not None:
            d["reward_scaler"] = self.reward_scaler.state_dict()
        return d

    def load_state_dict(self, d: dict) -> None:
        self.opt.load_state_dict(d["optimizer"], d.get("scheduler"))
        self.updates, self.skipped = int(d["updates"]), int(d["skipped"])
        if self.bank is not None and "bank" in d:
            for bank_t, saved in zip(_leaves(self.bank), d["bank"]):
                bank_t.copy_(saved)
        if self.reward_scaler is not None and "reward_scaler" in d:
            self.reward_scaler.load_state_dict(d["reward_scaler"])
            self.reward_scaler.returns.zero_()  # a resumed run's envs all start new episodes


def _span(streams: Tensor) -> Optional[slice]:
    """``slice(a, a + B)`` when ``streams`` are the consecutive ids ``a .. a+B-1``, else ``None``."""
    first = int(streams[0])
    consecutive = torch.arange(first, first + len(streams), device=streams.device)
    return slice(first, first + len(streams)) if torch.equal(streams, consecutive) else None


def _leaves(state: RecurrentState) -> list[Tensor]:
    return [state.c] + (list(state.sensitivities) if state.sensitivities is not None else [])
