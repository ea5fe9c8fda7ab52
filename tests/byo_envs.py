"""Small Gymnasium envs of a user's own, for the bring-your-own-environment tests.

Importing this module registers them, as a user's package would: ``rtrl train --env byo_envs:Tick-v0``.

* ``Tick-v0``: observation ``[t / 10, 1]``, reward ``t + 1`` at step ``t`` (0-based), two actions;
  action 1 at step 2 terminates the episode, otherwise a ``TimeLimit`` of 4 steps truncates it.
* ``TickBox-v0``: the same with a ``Box(-2, 2, (2,))`` action; ``action[0] > 1.5`` at step 2 terminates.
* ``Sign-v0``: remember a cue ``±1`` for two steps and answer with a ``Box(-1, 1)`` action (see :class:`Sign`).
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


class Sign(gym.Env):
    """``Sign-v0``: a cue ``±1`` on the first observation, one blank step, then ``[0, 1]`` asks for a
    ``Box(-1, 1)`` action: reward ``1 − |a − cue|`` there, 0 elsewhere; 4 steps an episode. Memoryless
    policies earn 0 in expectation, remembering earns 1."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue = 0, float(self.np_random.choice([-1.0, 1.0]))
        return np.array([self.cue, 0.0], np.float32), {}

    def step(self, action):
        last = self.t == 2
        reward = 1.0 - abs(float(np.clip(action[0], -1, 1)) - self.cue) if last else 0.0
        self.t += 1
        return np.array([0.0, float(self.t == 2)], np.float32), reward, last, False, {}


gym.register("Sign-v0", entry_point=Sign)


class Faulty(gym.Env):
    """``Faulty-v0``: a 4-float ``Box(-1, 1)`` observation, two actions, episodes of 3 steps, and at the
    second step of every episode the fault named by ``mode`` (default: the ``BYO_FAULT`` environment
    variable, read at each step, so that a test can fix the env between runs): ``raise`` (a
    ``RuntimeError`` from the simulator), ``hang`` (a step that never returns), ``grow`` or ``shrink``
    (an observation of 6 or 2 floats), ``nan`` (NaN inside the space's finite bounds); anything else,
    no fault. ``FaultyRaise-v0``, ``FaultyHang-v0``, ... fix the mode."""

    observation_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, mode: str = "") -> None:
        self.mode, self.t = mode, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(4, np.float32), {}

    def step(self, action):
        import os
        import time

        self.t += 1
        obs, mode = np.full(4, 0.5, np.float32), self.mode or os.environ.get("BYO_FAULT", "")
        if self.t == 2:
            if mode == "raise":
                raise RuntimeError("the simulator crashed")
            if mode == "hang":
                time.sleep(10**6)
            if mode in ("grow", "shrink"):
                obs = np.full(6 if mode == "grow" else 2, 0.5, np.float32)
            if mode == "nan":
                obs[1] = np.nan
        return obs, float(action), self.t == 3, False, {}


gym.register("Faulty-v0", entry_point=Faulty)
for _mode in ("raise", "hang", "grow", "shrink", "nan"):
    gym.register(f"Faulty{_mode.capitalize()}-v0", entry_point=Faulty, kwargs=dict(mode=_mode))
