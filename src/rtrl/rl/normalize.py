"""Observation normalisation and reward scaling, as cleanrl's and Stable-Baselines3's PPO have them.

    obs_rms = ObsNormalizer((4,))          # the agent owns it: its buffers travel with the weights
    x = obs_rms(obs)                       # (obs - mean) / sqrt(var + 1e-8), clipped to ±10
    obs_rms.update(obs_batch)              # the learner's job, once per update (see rtrl.rl.agent)

    scaler = RewardScaler(num_envs)        # the trainer owns it (a training-only transform)
    r = scaler(reward, done, discount)     # reward / sqrt(var(discounted return) + 1e-8), clipped to ±10

Both keep running statistics with Chan et al.'s parallel update of a mean and a (population)
variance, starting from mean 0, variance 1 and a count of 1e-4, as gymnasium's ``RunningMeanStd``
does, so a run's first statistics match the wrappers cleanrl's numbers were made with.

Why the statistics are buffers of modules: a checkpoint, ``--resume``, ``rtrl eval``, ``load_agent``
and the exported TorchScript/ONNX policy all carry a module's buffers already, so an exported
policy takes raw observations and nothing else needs plumbing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

EPS = 1e-8  # added to the variance before the square root
CLIP = 10.0  # normalised observations and scaled rewards are clipped to ±CLIP


class RunningMeanStd(nn.Module):
    """Running mean and population variance of the rows of a stream of batches ``(n, *shape)``.

    Buffers (float64, so that long runs do not lose the count): ``mean`` and ``var`` ``shape``,
    ``count`` ``()``."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Fold in the rows of ``x`` ``(n, *shape)`` (any leading dims are flattened into ``n``)."""
        x = x.reshape(-1, *self.mean.shape).to(self.mean)
        n = x.shape[0]
        if n == 0:
            return
        batch_mean, batch_var = x.mean(0), x.var(0, correction=0)
        delta = batch_mean - self.mean
        total = self.count + n
        m2 = self.var * self.count + batch_var * n + delta * delta * self.count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)


class ObsNormalizer(RunningMeanStd):
    """``obs (..., *shape)`` -> ``(obs - mean) / sqrt(var + 1e-8)``, clipped to ``±10``, in ``obs``'s
    float dtype. Its statistics change only by :meth:`update`."""

    def forward(self, obs: Tensor) -> Tensor:
        dtype = obs.dtype if obs.is_floating_point() else torch.float32
        mean, std = self.mean.to(dtype), torch.sqrt(self.var + EPS).to(dtype)
        return ((obs.to(dtype) - mean) / std).clamp(-CLIP, CLIP)


class RewardScaler(nn.Module):
    """Rewards divided by the running standard deviation of the discounted return, then clipped to
    ``±10`` (gymnasium's ``NormalizeReward`` followed by cleanrl's clip).

    Each of ``num_envs`` streams keeps its discounted return ``G ← γ·G + r``, zeroed after its
    episode ends; every step's ``G`` of all streams updates the variance before that step's rewards
    are scaled. Buffers: ``returns`` ``(num_envs,)`` and the statistics ``rms``."""

    def __init__(self, num_envs: int) -> None:
        super().__init__()
        self.rms = RunningMeanStd(())
        self.register_buffer("returns", torch.zeros(num_envs, dtype=torch.float64))

    @torch.no_grad()
    def forward(self, reward: Tensor, done: Tensor, discount: float, streams: Tensor | None = None) -> Tensor:
        """``reward``, ``done`` ``(T+1, B)`` in a segment's layout (``reward[t+1]`` is earned by the
        transition from step ``t``; ``done[t+1]``: that transition ended its episode) -> the scaled
        rewards ``(T+1, B)``; row 0 (the previous segment's reward, already counted) is kept as it is.
        ``streams`` ``(B,)``: which of the ``num_envs`` streams the columns are (R2AC's learner gets one
        actor's streams at a time); ``None``: all of them, in order."""
        if streams is None and reward.shape[1] != self.returns.shape[0]:
            raise ValueError(f"reward scaling was set up for {self.returns.shape[0]} envs, got rewards of "
                             f"{reward.shape[1]}")
        if streams is not None and reward.shape[1] != streams.shape[0]:
            raise ValueError(f"rewards of {reward.shape[1]} streams, but {streams.shape[0]} stream ids")
        returns = self.returns if streams is None else self.returns[streams.to(self.returns.device)]
        # an episode that starts at row 0 starts from G = 0 (after an actor's restart its previous segment
        # never said done; otherwise this zeroes what the previous segment's last row zeroed already)
        returns.masked_fill_(done[0].to(returns.device), 0.0)
        out = reward.clone()
        for t in range(1, reward.shape[0]):
            returns.mul_(discount).add_(reward[t].to(returns))
            self.rms.update(returns)
            out[t] = (reward[t] / torch.sqrt(self.rms.var + EPS).to(reward.dtype)).clamp(-CLIP, CLIP)
            returns.masked_fill_(done[t].to(returns.device), 0.0)
        if streams is not None:
            self.returns[streams.to(self.returns.device)] = returns
        return out
