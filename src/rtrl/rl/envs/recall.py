"""``rtrl-Recall<delay>-v0``: the in-repo memory task, vectorised numpy, no dependencies."""

from __future__ import annotations

import re
from typing import Optional

import numpy as np

from rtrl.rl.envs.base import VecEnv

RECALL_RE = re.compile(r"^rtrl-Recall(\d*)-v0$")
RECALL_DEFAULT_DELAY = 3


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


def _gym_env_class():
    """``RecallEnv``: one Recall episode stream as a ``gymnasium.Env`` (built on first use, so that this
    module needs no gymnasium)."""
    import gymnasium as gym

    class RecallEnv(gym.Env):
        """``gym.make("rtrl-Recall-v0")`` (delay 3), ``"rtrl-Recall<delay>-v0"``, or
        ``gym.make("rtrl-Recall-v0", delay=d)``: :class:`RecallVecEnv` with one env, as a gymnasium
        env (the observation after the query is blank; the episode ends there, terminated)."""

        metadata: dict = {"render_modes": []}

        def __init__(self, delay: int = RECALL_DEFAULT_DELAY) -> None:
            self._vec = RecallVecEnv(1, delay)
            self.observation_space = gym.spaces.Box(0.0, 1.0, (RecallVecEnv.OBS_DIM,), np.float32)
            self.action_space = gym.spaces.Discrete(2)
            self._next: Optional[np.ndarray] = None  # the next episode's first observation, drawn at the end

        def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
            super().reset(seed=seed)
            if seed is not None or self._next is None:
                self._next = self._vec.reset(int(self.np_random.integers(2**31)))
            obs, self._next = self._next[0], None
            return obs, {}

        def step(self, action):
            obs, reward, done = self._vec.step(np.asarray([action], np.int64))
            if done[0]:
                self._next = obs
                obs = np.zeros_like(obs)
            return obs[0], float(reward[0]), bool(done[0]), False, {}

    return RecallEnv


def __getattr__(name: str):
    if name == "RecallEnv":
        return _gym_env_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


GYM_DELAYS = (*range(11), 20, 30, 50, 100)  # the ids registered with gymnasium besides rtrl-Recall-v0


def register_gymnasium() -> None:
    """Register ``rtrl-Recall-v0`` and ``rtrl-Recall<d>-v0`` (``d`` in ``GYM_DELAYS``) with gymnasium, so
    that ``gym.make`` finds them beside an exported policy. Idempotent."""
    import gymnasium as gym

    ids = [("rtrl-Recall-v0", RECALL_DEFAULT_DELAY)] + [(f"rtrl-Recall{d}-v0", d) for d in GYM_DELAYS]
    for env_id, delay in ids:
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="rtrl.rl.envs.recall:RecallEnv", kwargs={"delay": delay})
