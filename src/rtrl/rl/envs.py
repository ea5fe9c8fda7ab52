"""Batched environments for R2AC: one small interface over popgym, MiniGrid and an in-repo task.

    env = make_env("popgym-RepeatPreviousEasy-v0", num_envs=32, seed=0)
    obs = env.reset(seed=0)                        # (num_envs, *obs_shape)
    obs, reward, done = env.step(actions)          # actions (num_envs,) int in [0, num_actions)
    for ret, length in env.pop_episode_stats(): ...
    env.close()

Episode boundaries, written once. The envs reset themselves: ``done[i]`` means env ``i``'s
episode ended with this step; ``reward[i]`` is that step's reward (it belongs to the episode
that ended), and ``obs[i]`` is already the *first* observation of the next episode. So the
learner's reset flag for the observation ``obs_t`` is ``done_{t-1}`` (``True`` for the
observations returned by :meth:`VecEnv.reset`). Terminated and truncated (time limit) episodes
are both ``done``: the learner treats both as the end of the episode and does not bootstrap past
it. That is the right reading for popgym, whose episodes end at a fixed length as part of the
task, and the usual one for MiniGrid's ``max_steps``.

Supported names (``ENV_NAMES``):

* ``rtrl-Recall-v0`` and ``rtrl-Recall<delay>-v0`` (e.g. ``rtrl-Recall10-v0``): an in-repo
  numpy memory task, no dependencies (see :class:`RecallVecEnv`). Delay 3 by default.
* ``popgym-<Task><Easy|Medium|Hard>-v0`` (``pip install popgym``), e.g.
  ``popgym-RepeatPreviousEasy-v0``. Observations are encoded as a flat float32 vector: one-hot
  for ``Discrete`` and for each component of ``MultiDiscrete``, ``Box`` flattened, ``Tuple``
  concatenated. Actions: ``Discrete`` as is; ``MultiDiscrete`` (Battleship, MineSweeper) is
  flattened into one ``Discrete(prod(nvec))``, row-major (``np.unravel_index``). The tasks whose
  optimal policy needs the previous action (popgym's ``obs_requires_prev_action``: Battleship,
  Concentration, MineSweeper, MultiarmedBandit) get the one-hot of the previous (flattened)
  action appended, all zeros on an episode's first observation, as popgym's ``PreviousAction``
  wrapper advises. The Pendulum tasks have continuous actions and are refused;
  ``popgym-Labyrinth*`` needs ``pip install mazelib`` as well.
* ``MiniGrid-*`` (``pip install minigrid``), e.g. ``MiniGrid-MemoryS7-v0``: the symbolic
  partial view (``7×7×3`` object, colour, state indices) one-hot encoded per channel (11 + 6 + 3
  = 20 values per cell, cell-major), then the one-hot agent direction (4): a flat float32 vector
  of ``49·20 + 4 = 984`` for the default view. The mission string is dropped (constant in the
  Memory tasks). All 7 MiniGrid actions are kept.

The gymnasium envs are stepped in a plain Python loop inside the :class:`VecEnv`: on a 2-core
machine a subprocess vector env gains little, and the agent costs far more than these envs.
"""

from __future__ import annotations

import importlib
import re
from importlib.util import find_spec
from typing import Any, Callable, Optional

import numpy as np

ENV_NAMES: tuple[str, ...] = (
    "ALE/<Game>-v5",
    "procgen-<game>[-<easy|hard|memory|exploration|extreme>]-v0",
    "rtrl-Recall-v0",
    "rtrl-Recall<delay>-v0",
    "popgym-<Task><Easy|Medium|Hard>-v0",
    "MiniGrid-*",
    "MemoryGym-<MortarMayhem|MysteryPath|SearingSpotlights>[-Grid]-v0[:param=value,...]",
    "MemoryMaze-<9x9|11x11|13x13|15x15>-v0",
)
"""The supported families of names, as patterns (see the module docstring)."""

_RECALL_RE = re.compile(r"^rtrl-Recall(\d*)-v0$")
RECALL_DEFAULT_DELAY = 3


class VecEnv:
    """A batch of ``num_envs`` environments that reset themselves automatically.

    Subclasses set ``num_envs``, ``obs_shape``, ``obs_dtype``, ``num_actions`` and implement
    ``_reset`` and ``_step``; this base class checks the actions and keeps the episode stats.
    """

    num_envs: int
    obs_shape: tuple[int, ...]  # shape of ONE observation as returned (after encoding)
    obs_dtype: np.dtype  # np.float32 for vector observations, np.uint8 for pixels
    num_actions: int  # discrete actions only
    name: str  # the name given to make_env
    default_seed: int = 0  # the seed given to make_env, for the caller's reset(seed)

    def __init__(self) -> None:
        self._started = False
        self._ep_return = np.zeros(self.num_envs, np.float64)
        self._ep_length = np.zeros(self.num_envs, np.int64)
        self._finished: list[tuple[float, int]] = []

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
        """actions ``(num_envs,)`` int -> obs ``(num_envs, *obs_shape)``, reward ``(num_envs,)``
        float32, done ``(num_envs,)`` bool. ``done[i]`` means env ``i``'s episode ended with this
        step; then ``obs[i]`` is already the FIRST observation of its next episode (auto-reset).

        The arrays are new on every call (safe to keep in a rollout buffer)."""
        if not self._started:
            raise RuntimeError(f"{self.name}: call reset(seed) before step()")
        actions = self._check_actions(actions)
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
                f"obs_dtype={np.dtype(self.obs_dtype).name}, num_actions={self.num_actions})")

    def _check_actions(self, actions: Any) -> np.ndarray:
        a = np.asarray(actions)
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


# ---------------------------------------------------------------------------------------------
# rtrl-Recall: the in-repo memory task
# ---------------------------------------------------------------------------------------------


class RecallVecEnv(VecEnv):
    """Remember one bit across ``delay`` blank steps; vectorised numpy, no dependencies.

    Observation (4 floats): ``[cue == 0, cue == 1, cue visible, query]``.

    * step 0: the cue ``[1, 0, 1, 0]`` or ``[0, 1, 1, 0]``, drawn uniformly per episode;
    * steps ``1..delay``: blank ``[0, 0, 0, 0]``;
    * step ``delay + 1``: the query ``[0, 0, 0, 1]``.

    Reward 0 for every action except the one taken at the query: +1 if it equals the cue, −1
    otherwise; that step ends the episode. So every episode has ``delay + 2`` steps, a policy
    without memory earns 0 in expectation and a perfect one earns 1. Two actions.
    """

    OBS_DIM = 4

    def __init__(self, num_envs: int, delay: int = RECALL_DEFAULT_DELAY, name: Optional[str] = None) -> None:
        if delay < 0:
            raise ValueError(f"Recall delay must be >= 0, got {delay}")
        self.num_envs = num_envs
        self.delay = delay
        self.name = name or f"rtrl-Recall{delay}-v0"
        self.obs_shape = (self.OBS_DIM,)
        self.obs_dtype = np.dtype(np.float32)
        self.num_actions = 2
        self._t = np.zeros(num_envs, np.int64)  # steps taken in the current episode
        self._cue = np.zeros(num_envs, np.int64)
        self._rngs: list[np.random.Generator] = []
        super().__init__()

    def _obs(self) -> np.ndarray:
        obs = np.zeros((self.num_envs, self.OBS_DIM), np.float32)
        at_cue = self._t == 0
        rows = np.flatnonzero(at_cue)
        obs[rows, self._cue[rows]] = 1.0
        obs[rows, 2] = 1.0
        obs[self._t == self.delay + 1, 3] = 1.0
        return obs

    def _reset(self, seed: int) -> np.ndarray:
        # One generator per env, so that env i's episodes depend on seed + i only.
        self._rngs = [np.random.default_rng(seed + i) for i in range(self.num_envs)]
        self._cue = np.array([int(r.integers(2)) for r in self._rngs], np.int64)
        self._t[:] = 0
        return self._obs()

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        done = self._t == self.delay + 1
        reward = np.where(done, np.where(actions == self._cue, 1.0, -1.0), 0.0).astype(np.float32)
        self._t += 1
        for i in np.flatnonzero(done):
            self._t[i] = 0
            self._cue[i] = int(self._rngs[i].integers(2))
        return self._obs(), reward, done


# ---------------------------------------------------------------------------------------------
# gymnasium envs (popgym, MiniGrid): encoders and the loop
# ---------------------------------------------------------------------------------------------

Encoder = Callable[[Any], np.ndarray]


def _space_encoder(space: Any) -> tuple[int, Encoder]:
    """``(size, encode)`` turning one observation of ``space`` into a flat float32 vector."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        n, start, eye = int(space.n), int(space.start), np.eye(int(space.n), dtype=np.float32)
        return n, lambda x: eye[int(x) - start]
    if isinstance(space, spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec, np.int64).ravel()
        start = np.broadcast_to(np.asarray(getattr(space, "start", 0), np.int64), space.nvec.shape).ravel()
        offsets = np.concatenate(([0], np.cumsum(nvec)[:-1]))
        size = int(nvec.sum())

        def encode_md(x: Any) -> np.ndarray:
            out = np.zeros(size, np.float32)
            out[offsets + (np.asarray(x, np.int64).ravel() - start)] = 1.0
            return out

        return size, encode_md
    if isinstance(space, (spaces.Box, spaces.MultiBinary)):
        return int(np.prod(space.shape)), lambda x: np.asarray(x, np.float32).ravel()
    if isinstance(space, (spaces.Tuple, spaces.Dict)):
        subs = list(space.spaces.values()) if isinstance(space, spaces.Dict) else list(space.spaces)
        keys = list(space.spaces.keys()) if isinstance(space, spaces.Dict) else list(range(len(subs)))
        parts = [_space_encoder(s) for s in subs]
        encoders = [enc for _, enc in parts]
        return sum(p[0] for p in parts), lambda x: np.concatenate([e(x[k]) for k, e in zip(keys, encoders)])
    raise ValueError(
        f"observation space {space} is not supported (Discrete, MultiDiscrete, Box, MultiBinary, "
        "Tuple, Dict of those)"
    )


def _minigrid_encoder(space: Any) -> tuple[int, Encoder]:
    """One-hot of object, colour and state per cell of the partial view, then of the direction."""
    from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

    h, w, c = space["image"].shape
    if c != 3:
        raise ValueError(f"expected MiniGrid's symbolic (H, W, 3) view, got image {space['image'].shape}")
    sizes = (len(OBJECT_TO_IDX), len(COLOR_TO_IDX), len(STATE_TO_IDX))
    eyes = [np.eye(n, dtype=np.float32) for n in sizes]
    n_dir = int(space["direction"].n)
    eye_dir = np.eye(n_dir, dtype=np.float32)

    def encode(obs: dict) -> np.ndarray:
        img = obs["image"]
        cells = np.concatenate([eyes[k][img[..., k]] for k in range(3)], -1)  # (H, W, 20)
        return np.concatenate((cells.ravel(), eye_dir[int(obs["direction"])]))

    return h * w * sum(sizes) + n_dir, encode


def _action_decoder(space: Any) -> tuple[int, Callable[[int], Any]]:
    """``(num_actions, decode)`` mapping a flat action index to one action of ``space``."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        start = int(space.start)
        return int(space.n), lambda a: a + start
    if isinstance(space, spaces.MultiDiscrete):
        nvec = tuple(int(n) for n in np.asarray(space.nvec).ravel())
        start = np.broadcast_to(np.asarray(getattr(space, "start", 0), np.int64), space.nvec.shape)
        shape, dtype = space.nvec.shape, space.dtype

        def decode_md(a: int) -> np.ndarray:
            return (np.array(np.unravel_index(a, nvec)).reshape(shape) + start).astype(dtype)

        return int(np.prod(nvec)), decode_md
    raise ValueError(f"action space {space} is not supported: R2AC needs discrete actions "
                     "(Discrete, or MultiDiscrete flattened into one Discrete)")


class GymVecEnv(VecEnv):
    """``num_envs`` gymnasium envs stepped in a Python loop, with observations encoded to flat
    float32 vectors by ``encoder`` and flat action indices decoded by ``decoder``.

    ``prev_action=True`` appends the one-hot of the previous flat action to each observation
    (zeros on an episode's first observation)."""

    def __init__(self, name: str, envs: list, encoder: tuple[int | tuple[int, ...], Encoder],
                 decoder: tuple[int, Callable[[int], Any]], prev_action: bool = False,
                 obs_dtype: Any = np.float32) -> None:
        self.name = name
        self.num_envs = len(envs)
        self._envs = envs
        (obs_dim, self._encode), (self.num_actions, self._decode) = encoder, decoder
        self._prev_action = prev_action
        if isinstance(obs_dim, int):
            self.obs_shape = (obs_dim + (self.num_actions if prev_action else 0),)
        else:  # pixels, (C, H, W)
            self.obs_shape = tuple(obs_dim)
        self.obs_dtype = np.dtype(obs_dtype)
        self._closed = False
        super().__init__()

    def _put(self, out: np.ndarray, i: int, obs: Any, action: Optional[int]) -> None:
        enc = self._encode(obs)
        out[i, : enc.shape[0]] = enc
        if self._prev_action and action is not None:
            out[i, enc.shape[0] + action] = 1.0

    def _reset(self, seed: int) -> np.ndarray:
        obs = np.zeros((self.num_envs, *self.obs_shape), self.obs_dtype)
        for i, env in enumerate(self._envs):
            o, _ = env.reset(seed=seed + i)
            self._put(obs, i, o, None)
        return obs

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs = np.zeros((self.num_envs, *self.obs_shape), self.obs_dtype)
        reward = np.zeros(self.num_envs, np.float32)
        done = np.zeros(self.num_envs, bool)
        for i, env in enumerate(self._envs):
            a = int(actions[i])
            o, r, terminated, truncated, _ = env.step(self._decode(a))
            reward[i] = r
            if terminated or truncated:
                # The env keeps its own RNG, so the next episode needs no new seed.
                done[i] = True
                o, _ = env.reset()
                self._put(obs, i, o, None)
            else:
                self._put(obs, i, o, a)
        return obs, reward, done

    def close(self) -> None:
        if not self._closed:
            for env in self._envs:
                env.close()
            self._closed = True


# ---------------------------------------------------------------------------------------------
# make_env
# ---------------------------------------------------------------------------------------------


def _import(module: str, pip_name: str, name: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        msg = f"environment {name!r} needs the {pip_name!r} package: pip install {pip_name}"
        raise ImportError(msg) from err


def _make_popgym(name: str, num_envs: int) -> VecEnv:
    _import("popgym", "popgym", name)
    import gymnasium as gym

    if name not in gym.registry:
        if "Labyrinth" in name and find_spec("mazelib") is None:
            raise ImportError(f"environment {name!r} needs the 'mazelib' package: pip install mazelib")
        known = sorted(k for k in gym.registry if k.startswith("popgym-"))
        raise ValueError(f"unknown popgym environment {name!r}; popgym registers: {', '.join(known)}")
    # The passive checker only warns about popgym returning Python ints for Discrete observations.
    envs = [gym.make(name, disable_env_checker=True) for _ in range(num_envs)]
    e = envs[0]
    try:
        decoder = _action_decoder(e.action_space)
    except ValueError as err:
        for env in envs:
            env.close()
        raise ValueError(f"{name}: {err}") from None
    prev_action = bool(getattr(e.unwrapped, "obs_requires_prev_action", False))
    return GymVecEnv(name, envs, _space_encoder(e.observation_space), decoder, prev_action)


def _make_minigrid(name: str, num_envs: int) -> VecEnv:
    _import("minigrid", "minigrid", name)
    import gymnasium as gym

    if name not in gym.registry:
        memory = sorted(k for k in gym.registry if k.startswith("MiniGrid-Memory"))
        raise ValueError(f"unknown MiniGrid environment {name!r}; e.g. {', '.join(memory)} "
                         "(see the minigrid documentation for all MiniGrid-* ids)")
    envs = [gym.make(name, disable_env_checker=True) for _ in range(num_envs)]
    e = envs[0]
    return GymVecEnv(name, envs, _minigrid_encoder(e.observation_space), _action_decoder(e.action_space))


def _reset_params(name: str, env_id: str, text: str, defaults: dict) -> dict:
    """``"command_count=3,arena_size=4"`` -> Memory Gym reset parameters, checked against the
    env's defaults (a scalar given for a list-valued parameter becomes a one-element list)."""
    import ast

    params = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"bad Memory Gym parameter {item!r} in {name!r}: write key=value with a key of "
                             f"{env_id}: {', '.join(sorted(defaults))}")
        try:
            v = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"bad value {value!r} for {key} in {name!r}: give a number or True/False") from None
        params[key] = [v] if isinstance(defaults[key], list) and not isinstance(v, list) else v
    return params


def _make_memory_gym(name: str, num_envs: int) -> VecEnv:
    """Memory Gym (Mortar Mayhem, Mystery Path, Searing Spotlights): 84×84 RGB, as (3, 84, 84) uint8.

    ``MemoryGym-<id>:key=value,...`` sets the env's reset parameters, e.g.
    ``MemoryGym-MortarMayhem-Grid-v0:command_count=3`` (3 commands to remember instead of 10).
    """
    import os

    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame: no sound card, no screen
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    _import("memory_gym", "memory-gym --no-deps  (it also needs pygame-ce, which minigrid brings)", name)
    import gymnasium as gym

    env_id, _, options = name.removeprefix("MemoryGym-").partition(":")
    if env_id not in gym.registry:
        known = sorted(k for k in gym.registry if any(t in k for t in ("Mortar", "Mystery", "Searing")))
        raise ValueError(f"unknown Memory Gym environment {name!r}; known: "
                         + ", ".join("MemoryGym-" + k for k in known))
    envs = [gym.make(env_id, disable_env_checker=True) for _ in range(num_envs)]
    if options:
        params = _reset_params(name, env_id, options, envs[0].unwrapped.default_reset_parameters)
        envs = [_WithResetOptions(e, params) for e in envs]
    h, w, c = envs[0].observation_space.shape
    encoder = ((c, h, w), lambda x: np.ascontiguousarray(np.asarray(x, np.uint8).transpose(2, 0, 1)))
    return GymVecEnv(name, envs, encoder, _action_decoder(envs[0].action_space), obs_dtype=np.uint8)


class _WithResetOptions:
    """A gymnasium env whose every reset gets the same ``options`` (Memory Gym's reset parameters)."""

    def __init__(self, env, options: dict) -> None:
        self.env, self.options = env, options
        self.observation_space, self.action_space = env.observation_space, env.action_space

    def reset(self, seed=None):
        return self.env.reset(seed=seed, options=self.options)

    def step(self, action):
        return self.env.step(action)

    def close(self) -> None:
        self.env.close()


def make_env(name: str, num_envs: int, seed: int = 0, evaluation: bool = False) -> VecEnv:
    """A :class:`VecEnv` of ``num_envs`` copies of ``name`` (see ``ENV_NAMES``).

    ``evaluation=True`` asks for the evaluation variant where one exists: for Atari, whole games
    (no episode end at a lost life).

    ``seed`` only names the default for the caller's first ``reset(seed)``; the envs are seeded
    by ``reset`` (env ``i`` with ``seed + i``), nothing is random before it.
    Raises ``ValueError`` for an unknown name and ``ImportError`` (with the ``pip install``
    that fixes it) for a missing optional package.
    """
    if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    num_envs = int(num_envs)
    m = _RECALL_RE.match(name)
    if m:
        delay = int(m.group(1)) if m.group(1) else RECALL_DEFAULT_DELAY
        env: VecEnv = RecallVecEnv(num_envs, delay, name=name)
    elif name.startswith("popgym-"):
        env = _make_popgym(name, num_envs)
    elif name.startswith("MiniGrid-"):
        env = _make_minigrid(name, num_envs)
    elif name.startswith("MemoryGym-"):
        env = _make_memory_gym(name, num_envs)
    elif name.startswith("MemoryMaze-"):
        from rtrl.rl.memory_maze import MemoryMazeVecEnv

        env = MemoryMazeVecEnv(name, num_envs)
    elif name.startswith("procgen-"):
        from rtrl.rl.procgen import ProcgenVecEnv

        env = ProcgenVecEnv(name, num_envs, evaluation=evaluation)
    elif name.startswith("ALE/"):
        from rtrl.rl.atari import AtariVecEnv

        env = AtariVecEnv(name, num_envs, episodic_life=not evaluation)
    else:
        raise ValueError(f"unknown environment {name!r}; supported families: {', '.join(ENV_NAMES)}")
    env.default_seed = int(seed)
    return env
