"""The batched-environment interface every adapter implements, and its episode-boundary rules.

Episode boundaries, written once. The envs reset themselves: ``done[i]`` means env ``i``'s
episode ended with this step; ``reward[i]`` is that step's reward (it belongs to the episode
that ended), and ``obs[i]`` is already the *first* observation of the next episode. So the
learner's reset flag for the observation ``obs_t`` is ``done_{t-1}`` (``True`` for the
observations returned by :meth:`VecEnv.reset`).

Terminated and truncated are kept apart. ``done`` covers both: the episode is over, the next
observation starts a new one, and the core's state is reset there. After each ``step`` the env
also tells which of the ``done`` episodes were cut by a time limit rather than terminated:
``env.truncated[i]`` (``(num_envs,)`` bool), with the observation the truncated episode would
have continued from in ``env.final_obs[i]`` (``(num_envs, *obs_shape)``, ``None`` when no env
was truncated; rows of other envs are zeros). The learners bootstrap through a truncation (the
return goes on past a time limit, as Gymnasium's ``TimeLimit`` intends): the target of the last
transition is ``r + γ·V(final_obs)``, where ``V(final_obs)`` is the value of that observation with
the core's state carried on from the truncated episode; a termination is not bootstrapped
(``r + 0``). Adapters that cannot tell the two apart (Atari, ProcGen, Recall) report no truncation.

Actions: ``num_actions`` discrete actions (``actions`` ``(num_envs,)`` int), or, where
``continuous`` is true, a vector of ``num_actions`` floats per env (``actions``
``(num_envs, num_actions)`` float) in the agent's normalised space: ``[-1, 1]`` in every bounded
dimension, mapped by the adapter onto the env's ``[low, high]`` (clipped there first).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np


def require(module: str, pip_name: str, name: str) -> Any:
    """Import ``module`` for environment ``name``, or raise an ``ImportError`` that gives the install line."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        msg = f"environment {name!r} needs the {pip_name!r} package: pip install {pip_name}"
        raise ImportError(msg) from err


class VecEnv:
    """A batch of ``num_envs`` environments that reset themselves automatically.

    Subclasses set ``num_envs``, ``obs_shape``, ``obs_dtype``, ``num_actions`` and implement
    ``_reset`` and ``_step``; this base class checks the actions and keeps the episode stats.
    """

    num_envs: int
    obs_shape: tuple[int, ...]  # shape of ONE observation as returned (after encoding)
    obs_dtype: np.dtype  # np.float32 for vector observations, np.uint8 for pixels
    num_actions: int  # discrete: the number of actions; continuous: the action vector's size
    name: str  # the name given to make_env
    default_seed: int = 0  # the seed given to make_env, for the caller's reset(seed)
    continuous: bool = False  # Box actions: (num_envs, num_actions) floats in the normalised space
    truncated: np.ndarray  # after step: which envs' episodes a time limit cut (a subset of done)
    final_obs: "np.ndarray | None" = None  # after step: where truncated, the obs the episode stopped at

    def __init__(self) -> None:
        self._started = False
        self._ep_return = np.zeros(self.num_envs, np.float64)
        self._ep_length = np.zeros(self.num_envs, np.int64)
        self._finished: list[tuple[float, int]] = []
        self.truncated = np.zeros(self.num_envs, bool)

    # -- the interface ------------------------------------------------------------------------

    def reset(self, seed: int) -> np.ndarray:
        """Start a new episode in every env, env ``i`` seeded with ``seed + i``.

        Returns the first observations ``(num_envs, *obs_shape)``. Episodes in progress are
        dropped from the stats; finished ones not yet popped are kept.
        """
        obs = self._reset(int(seed))
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._started = True
        return obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """actions ``(num_envs,)`` int (continuous: ``(num_envs, num_actions)`` float) -> obs ``(num_envs, *obs_shape)``, reward ``(num_envs,)``
        float32, done ``(num_envs,)`` bool. ``done[i]`` means env ``i``'s episode ended with this
        step; then ``obs[i]`` is already the FIRST observation of its next episode (auto-reset).

        The arrays are new on every call (safe to keep in a rollout buffer)."""
        if not self._started:
            raise RuntimeError(f"{self.name}: call reset(seed) before step()")
        actions = self._check_actions(actions)
        self.truncated, self.final_obs = np.zeros(self.num_envs, bool), None  # an adapter's _step may set them
        obs, reward, done, *scored = self._step(actions)
        # ``_step`` may return a 4th array: where the *scored* episode ends, when that differs from
        # ``done`` (Atari training: ``done`` at each life lost, the score counts whole games)
        ends = scored[0] if scored else done
        self._ep_return += reward
        self._ep_length += 1
        for i in np.flatnonzero(ends):
            self._finished.append((float(self._ep_return[i]), int(self._ep_length[i])))
            self._ep_return[i] = 0.0
            self._ep_length[i] = 0
        return obs, reward, done

    def pop_episode_stats(self) -> list[tuple[float, int]]:
        """``(return, length)`` of the episodes finished since the last call, in the order they
        finished (env index order within one step)."""
        out, self._finished = self._finished, []
        return out

    def close(self) -> None:
        """Release the envs' resources. Idempotent."""

    # -- helpers ------------------------------------------------------------------------------

    def __enter__(self) -> "VecEnv":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, num_envs={self.num_envs}, obs_shape={self.obs_shape}, "
                f"obs_dtype={np.dtype(self.obs_dtype).name}, num_actions={self.num_actions}"
                + (", continuous=True)" if self.continuous else ")"))

    def _check_actions(self, actions: Any) -> np.ndarray:
        a = np.asarray(actions)
        if self.continuous:
            if a.shape != (self.num_envs, self.num_actions):
                raise ValueError(f"{self.name}: continuous actions must have shape (num_envs, action size) = "
                                 f"({self.num_envs}, {self.num_actions}), got {a.shape}")
            if a.dtype.kind != "f" or not np.isfinite(a).all():
                raise ValueError(f"{self.name}: continuous actions must be finite floats, got {a.dtype}")
            return a.astype(np.float32, copy=False)
        if a.shape != (self.num_envs,):
            raise ValueError(
                f"{self.name}: actions must have shape (num_envs,) = ({self.num_envs},), got {a.shape}"
            )
        if a.dtype.kind not in "iu":
            raise ValueError(f"{self.name}: actions must be integers, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= self.num_actions):
            raise ValueError(
                f"{self.name}: actions must lie in [0, {self.num_actions}), got {a.min()}..{a.max()}"
            )
        return a.astype(np.int64, copy=False)

    def _reset(self, seed: int) -> np.ndarray:
        raise NotImplementedError

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError
