"""Small Gymnasium envs of a user's own, for the bring-your-own-environment tests.

Importing this module registers them, as a user's package would: ``rtrl train --env byo_envs:Tick-v0``.

* ``Tick-v0``: observation ``[t / 10, 1]``, reward ``t + 1`` at step ``t`` (0-based), two actions;
  action 1 at step 2 terminates the episode, otherwise a ``TimeLimit`` of 4 steps truncates it.
* ``TickBox-v0``: the same with a ``Box(-2, 2, (2,))`` action; ``action[0] > 1.5`` at step 2 terminates.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Tick(gym.Env):
    def __init__(self, continuous: bool = False) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Box(-2.0, 2.0, (2,), np.float32) if continuous else spaces.Discrete(2)
        self.continuous, self.t = continuous, 0

    def _obs(self) -> np.ndarray:
        return np.array([self.t / 10, 1.0], np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        stop = (float(action[0]) > 1.5) if self.continuous else int(action) == 1
        reward, terminated = float(self.t + 1), self.t == 2 and stop
        self.t += 1
        return self._obs(), reward, terminated, False, {}


gym.register("Tick-v0", entry_point=Tick, max_episode_steps=4)
gym.register("TickBox-v0", entry_point=Tick, kwargs=dict(continuous=True), max_episode_steps=4)
