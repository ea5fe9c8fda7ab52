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
