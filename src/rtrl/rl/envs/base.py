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

Observations are checked against the space the env started with, at every ``reset`` and ``step``:
the batch's shape must be ``(num_envs, *obs_shape)`` and its dtype the env's (a float vector of
another float or integer type is converted to float32; pixels must be integers that fit uint8
exactly, no other dtype); the gymnasium adapters also check each env's own observation against
its space (shape, dtype, a discrete value in range) and, where a ``Box``'s bounds are finite,
that the values are finite (``obs_finite``). A mismatch raises :class:`ObservationError`, one line
naming the env, the step and both shapes: nothing is padded, cut or wrapped to fit.

Actions: ``num_actions`` discrete actions (``actions`` ``(num_envs,)`` int), or, where
``continuous`` is true, a vector of ``num_actions`` floats per env (``actions``
``(num_envs, num_actions)`` float) in the agent's normalised space: ``[-1, 1]`` in every bounded
dimension, mapped by the adapter onto the env's ``[low, high]`` (clipped there first).
"""

from __future__ import annotations

import importlib
from typing import Any, Optional

import numpy as np


def require(module: str, pip_name: str, name: str) -> Any:
    """Import ``module`` for environment ``name``, or raise an ``ImportError`` that gives the install line."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        msg = f"environment {name!r} needs the {pip_name!r} package: pip install {pip_name}"
        raise ImportError(msg) from err


class ObservationError(ValueError):
    """An observation that does not fit the space its env started with (shape, dtype, a value out of
    a discrete range, NaN/Inf where the space's bounds are finite): the run cannot go on.

    Raised by an encoder with ``what`` alone ("has shape (2,), but ..."); the adapter adds the env's
    index and :meth:`VecEnv.step` the env's name and the step, making the one-line message."""

    def __init__(self, what: str, index: Optional[int] = None, name: str = "", step: Optional[int] = None,
                 message: str = "") -> None:
        self.what, self.index, self.name, self.step = what, index, name, step
        super().__init__(message or self._message())  # ``message``: a whole one, e.g. from an actor process

    def _message(self) -> str:
        who = f"env {self.index}'s observation" if self.index is not None else "an observation"
        when = "" if self.step is None else " at reset" if self.step == 0 else f" at step {self.step}"
        head = f"{self.name}: " if self.name else ""
        return (f"{head}{who}{when} {self.what}; fix the environment (or wrap it) so that every observation "
                "fits the space it started with: rtrl never pads or cuts one to fit")

    def located(self, index: Optional[int] = None, name: str = "",
                step: Optional[int] = None) -> "ObservationError":
        """The same error with what is known here added (what it already names is kept)."""
        return ObservationError(self.what, self.index if self.index is not None else index, self.name or name,
                                self.step if self.step is not None else step)

    def __reduce__(self):  # sent between processes (an actor's error reaches the learner)
        return ObservationError, (self.what, self.index, self.name, self.step, str(self))


def check_observation_batch(obs: Any, env: "VecEnv") -> np.ndarray:
    """``obs`` as ``(num_envs, *obs_shape)`` of ``env.obs_dtype``, or :class:`ObservationError`: the
    shape must be exact; a float env accepts any real dtype (converted), a uint8 one only integers
    within 0..255; entries that ``env.obs_finite`` marks must be finite."""
    a = np.asarray(obs)
    want = (env.num_envs, *env.obs_shape)
    if a.shape != want:
        raise ObservationError(f"batch has shape {a.shape}, but the run started with {want} "
                               "(num_envs, *obs_shape)")
    dtype = np.dtype(env.obs_dtype)
    if a.dtype != dtype:
        if dtype.kind == "f" and a.dtype.kind in "biuf":
            a = a.astype(dtype)
        elif dtype == np.uint8 and a.dtype.kind in "iu" and (a.size == 0 or 0 <= a.min() <= a.max() <= 255):
            a = a.astype(dtype)
        else:
            raise ObservationError(f"batch has dtype {a.dtype}, but the run started with {dtype}")
    mask = getattr(env, "obs_finite", None)
    if mask is not None and dtype.kind == "f":
        bad = ~np.isfinite(a) & mask
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(len(a), -1).any(1))[0])
            where = np.flatnonzero(bad[i].ravel())[:5].tolist()
            raise ObservationError(f"holds NaN/Inf at entries {where}, where its space's bounds are finite",
                                   i)
    return a


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
    obs_finite: "np.ndarray | None" = None  # (*obs_shape,) bool: entries the space bounds (must be finite)

    def __init__(self) -> None:
        self._started = False
        self._steps = 0  # step() calls since reset(): the step an ObservationError names
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
        self._steps = 0
        obs = self._checked(lambda: self._reset(int(seed)))
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
        self._steps += 1
        obs, reward, done, *scored = self._checked(lambda: self._step(actions))
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

    def _checked(self, call):
        """``call()`` (``_reset`` or ``_step``) with its observations checked
        (:func:`check_observation_batch`); an :class:`ObservationError` gets this env's name and step."""
        try:
            out = call()
            if isinstance(out, tuple):
                out = (check_observation_batch(out[0], self), *out[1:])
            else:
                out = check_observation_batch(out, self)
            if self.final_obs is not None:
                self.final_obs = check_observation_batch(self.final_obs, self)
        except ObservationError as e:
            raise e.located(name=self.name, step=self._steps) from None
        return out

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
