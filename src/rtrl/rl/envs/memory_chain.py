"""``rtrl-MemoryChain<length>-v0``: bsuite's ``memory_chain`` diagnostic, vectorised numpy, no dependencies.

bsuite's definition (``bsuite/environments/memory_chain.py``), kept step for step. An episode draws
``num_bits`` context bits (each 0 or 1 with probability ½) and one query index. The observation is
``num_bits + 2`` floats:

    [time, query, context...]      time = 1 − k/L, the query index on the last observation only,
                                   the context as ±1 on the first observation only (0 elsewhere)

where ``k`` counts the episode's steps and ``L`` is the chain's length. bsuite's ``step`` returns
the observation of the step it is *leaving* (computed before its counter advances), so an episode
shows the observations ``obs(0), obs(0), obs(1), …, obs(L−1)`` and takes ``L + 1`` actions: the
context is seen twice (after reset and after the first step), then ``L − 1`` observations without
it, and the action taken on ``obs(L−1)`` (the one showing the query) decides the reward: ``+1`` if it
equals the queried context bit, ``−1`` otherwise; every other step earns 0. Two actions; a policy
without memory earns 0 in expectation, a perfect one 1. The episode then terminates (no time limit,
no truncation).
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np

from rtrl.rl.envs.base import VecEnv

MEMORY_CHAIN_RE = re.compile(r"^rtrl-MemoryChain(\d+)-v0$")
GYM_LENGTHS = tuple(range(1, 129))  # the ids registered with gymnasium: rtrl-MemoryChain1-v0 .. 128


class MemoryChainVecEnv(VecEnv):
    """``num_envs`` MemoryChain streams of chain length ``length`` (see the module docstring).

    Env ``i``'s episodes depend on ``seed + i`` only (its own generator)."""

    def __init__(self, num_envs: int, length: int, num_bits: int = 1, name: Optional[str] = None) -> None:
        if length < 1:
            raise ValueError(f"MemoryChain length must be >= 1, got {length}")
        if num_bits < 1:
            raise ValueError(f"MemoryChain num_bits must be >= 1, got {num_bits}")
        self.num_envs, self.length, self.num_bits = num_envs, length, num_bits
        self.name = name or f"rtrl-MemoryChain{length}-v0"
        self.obs_shape = (num_bits + 2,)
        self.obs_dtype = np.dtype(np.float32)
        self.num_actions = 2
        self._t = np.zeros(num_envs, np.int64)  # bsuite's _timestep: steps taken in the episode
        self._context = np.zeros((num_envs, num_bits), np.int64)
        self._query = np.zeros(num_envs, np.int64)
        self._rngs: list[np.random.Generator] = []
        super().__init__()

    def _draw(self, i: int) -> None:
        """A new episode's context and query for env ``i``."""
        self._context[i] = self._rngs[i].integers(2, size=self.num_bits)
        self._query[i] = self._rngs[i].integers(self.num_bits)

    def _obs_at(self, t: np.ndarray) -> np.ndarray:
        """bsuite's observation at step counters ``t`` ``(num_envs,)``: ``(num_envs, num_bits + 2)``."""
        obs = np.zeros((self.num_envs, *self.obs_shape), np.float32)
        obs[:, 0] = 1.0 - t / self.length
        last = t == self.length - 1
        obs[last, 1] = self._query[last]
        first = t == 0
        obs[first, 2:] = 2.0 * self._context[first] - 1.0
        return obs

    def _reset(self, seed: int) -> np.ndarray:
        self._rngs = [np.random.default_rng(seed + i) for i in range(self.num_envs)]
        for i in range(self.num_envs):
            self._draw(i)
        self._t[:] = 0
        return self._obs_at(self._t)

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs = self._obs_at(self._t)  # the observation of the step being left, as bsuite returns it
        done = self._t == self.length  # this step's action is the decision
        wanted = self._context[np.arange(self.num_envs), self._query]
        reward = np.where(done, np.where(actions == wanted, 1.0, -1.0), 0.0).astype(np.float32)
        self._t += 1
        rows = np.flatnonzero(done)
        if rows.size:  # auto-reset: these envs' next observation is a new episode's first
            for i in rows:
                self._draw(int(i))
            self._t[rows] = 0
            obs[rows] = self._obs_at(self._t)[rows]
        return obs, reward, done


def _gym_env_class():
    """``MemoryChainEnv``: one stream as a ``gymnasium.Env`` (built on first use: no gymnasium here)."""
    import gymnasium as gym

    class MemoryChainEnv(gym.Env):
        """``gym.make("rtrl-MemoryChain32-v0")`` or ``gym.make("rtrl-MemoryChain1-v0", length=L)``:
        :class:`MemoryChainVecEnv` with one env; the decision step is ``terminated`` and returns bsuite's
        last observation (``obs(L)``, its time 0)."""

        metadata: dict = {"render_modes": []}

        def __init__(self, length: int = 32, num_bits: int = 1) -> None:
            self._vec = MemoryChainVecEnv(1, length, num_bits)
            high = float(max(num_bits - 1, 1))  # the query index; time and context lie in [-1, 1]
            self.observation_space = gym.spaces.Box(-1.0, high, (num_bits + 2,), np.float32)
            self.action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
            super().reset(seed=seed)
            return self._vec.reset(int(self.np_random.integers(2**31)))[0], {}

        def step(self, action):
            t = self._vec._t.copy()
            obs, reward, done = self._vec.step(np.asarray([action], np.int64))
            if done[0]:  # the vector env already drew the next episode: show bsuite's final observation
                obs = self._vec_final_obs(t)
            return obs[0], float(reward[0]), bool(done[0]), False, {}

        def _vec_final_obs(self, t: np.ndarray) -> np.ndarray:
            obs = np.zeros((1, *self._vec.obs_shape), np.float32)
            obs[:, 0] = 1.0 - t / self._vec.length
            return obs

    return MemoryChainEnv


def __getattr__(name: str):
    if name == "MemoryChainEnv":
        return _gym_env_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_gymnasium() -> None:
    """Register ``rtrl-MemoryChain<L>-v0`` for ``L`` in ``GYM_LENGTHS`` with gymnasium. Idempotent."""
    import gymnasium as gym

    for length in GYM_LENGTHS:
        env_id = f"rtrl-MemoryChain{length}-v0"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="rtrl.rl.envs.memory_chain:MemoryChainEnv",
                         kwargs={"length": length})
