"""ProcGen through procgen-mirror (the same C++ as OpenAI's procgen 0.10.7, built for Python 3.11).

    env = make_env("procgen-chaser-hard-v0", num_envs=8)                  # 500 training levels
    env = make_env("procgen-chaser-hard-v0", 8, evaluation=True)          # held-out levels 1000..1199

As the paper's code: 64×64 RGB (returned as ``(3, 64, 64)`` uint8), no frame stack, the full
15-action space, ``num_levels = 500`` from level 0 for training; evaluation plays the 200 levels
that start at 1000 (never seen in training). Modes: easy, hard (default), memory, exploration,
extreme. Install: ``pip install --no-deps procgen-mirror==0.10.7 gym3==0.3.3`` then
``pip install gym==0.26.2 cffi imageio`` (its declared pins would downgrade numpy).
"""

from __future__ import annotations

import re

import numpy as np

from rtrl.rl.envs.base import VecEnv

_NAME_RE = re.compile(r"^procgen-([a-z]+)(?:-(easy|hard|memory|exploration|extreme))?-v0$")
TRAIN_LEVELS, EVAL_START, EVAL_LEVELS = 500, 1000, 200
# the games that have these modes (procgen's C++ aborts the whole process on any other)
MODE_GAMES = {"memory": {"caveflyer", "dodgeball", "heist", "jumper", "maze", "miner"},
              "exploration": {"caveflyer", "climber", "coinrun", "heist", "jumper", "leaper", "maze", "ninja"}}


class ProcgenVecEnv(VecEnv):
    def __init__(self, name: str, num_envs: int, evaluation: bool = False) -> None:
        m = _NAME_RE.match(name)
        if not m:
            raise ValueError(f"ProcGen names look like 'procgen-chaser-hard-v0', got {name!r}")
        try:
            from procgen import ProcgenGym3Env
        except ImportError:
            raise ImportError(f"{name} needs procgen-mirror: pip install --no-deps procgen-mirror==0.10.7 "
                              "gym3==0.3.3 && pip install gym==0.26.2 cffi imageio") from None
        from procgen.env import ENV_NAMES

        self._make = ProcgenGym3Env
        self._game, self._mode = m.group(1), m.group(2) or "hard"
        if self._game not in ENV_NAMES:  # checked here: procgen's C++ aborts the process on an unknown game
            raise ValueError(f"unknown ProcGen game {self._game!r} in {name!r}; games: {', '.join(ENV_NAMES)}")
        if self._game not in MODE_GAMES.get(self._mode, {self._game}):
            raise ValueError(f"{self._game} has no {self._mode} mode; it exists for "
                             f"{', '.join(sorted(MODE_GAMES[self._mode]))}")
        self._start, self._levels = (EVAL_START, EVAL_LEVELS) if evaluation else (0, TRAIN_LEVELS)
        self.name, self.num_envs = name, num_envs
        self.obs_shape, self.obs_dtype, self.num_actions = (3, 64, 64), np.dtype(np.uint8), 15
        self._env = None
        super().__init__()

    def _reset(self, seed: int) -> np.ndarray:
        if self._env is not None:
            self._env.close() if hasattr(self._env, "close") else None
        try:
            self._env = self._make(num=self.num_envs, env_name=self._game, distribution_mode=self._mode,
                                   num_levels=self._levels, start_level=self._start, rand_seed=int(seed) % 2**31)
        except Exception as e:  # e.g. a mode the game does not have
            raise ValueError(f"{self.name}: ProcGen refused it ({type(e).__name__}: {e})") from None
        return self._obs()

    def _obs(self) -> np.ndarray:
        _, obs, _ = self._env.observe()
        return np.ascontiguousarray(obs["rgb"].transpose(0, 3, 1, 2))

    def _step(self, actions: np.ndarray):
        self._env.act(actions.astype(np.int32))
        reward, obs, first = self._env.observe()  # first[i]: obs[i] starts a new episode (auto-reset)
        return (np.ascontiguousarray(obs["rgb"].transpose(0, 3, 1, 2)), np.asarray(reward, np.float32),
                np.asarray(first, bool))

    def close(self) -> None:
        self._env = None
