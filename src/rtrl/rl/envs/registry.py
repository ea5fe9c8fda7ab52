"""``make_env``: the one entry point from an environment's name to a :class:`VecEnv`.

Each family of names has its own adapter module, imported only when a name of it is asked for,
so a missing optional package costs nothing until it is used.
"""

from __future__ import annotations

import numpy as np

from rtrl.rl.envs.base import VecEnv
from rtrl.rl.envs.memory_chain import MEMORY_CHAIN_RE, MemoryChainVecEnv
from rtrl.rl.envs.recall import RECALL_DEFAULT_DELAY, RECALL_RE, RecallVecEnv

ENV_NAMES: tuple[str, ...] = (
    "ALE/<Game>-v5",
    "procgen-<game>[-<easy|hard|memory|exploration|extreme>]-v0",
    "rtrl-Recall-v0",
    "rtrl-Recall<delay>-v0",
    "rtrl-MemoryChain<length>-v0",
    "popgym-<Task><Easy|Medium|Hard>-v0",
    "MiniGrid-*",
    "MemoryGym-<MortarMayhem|MysteryPath|SearingSpotlights>[-Grid]-v0[:param=value,...]",
    "MemoryMaze-<9x9|11x11|13x13|15x15>-v0",
    "<any Gymnasium id>",
    "<module>:<EnvId>",
    "<PositionOnly|VelocityOnly>/<MuJoCo id>",
)
"""The supported families of names, as patterns (see :mod:`rtrl.rl.envs`)."""


FORK_SAFE_PREFIXES = ("rtrl-Recall", "rtrl-MemoryChain", "popgym-", "MiniGrid-")
"""Families of pure-Python/numpy envs that a forked process may build and step. The others hold
native state that does not survive a fork (MuJoCo's EGL context, ALE's and ProcGen's threads,
SDL), so processes that step them start by spawning."""


def fork_safe(name: str) -> bool:
    """Whether an actor process for env ``name`` may start by ``fork`` (fast) instead of ``spawn``."""
    return name.startswith(FORK_SAFE_PREFIXES)


LIVE_PREFIX = "object:"
LIVE_ENVS: dict[str, VecEnv] = {}
"""Env objects handed to the Python API (``rtrl.api.train(cfg, env=<a VectorEnv>)``), by the name
``object:<name>`` that the run's config records; ``make_env`` lends them out (closing the loan
leaves them open)."""


class _Borrowed(VecEnv):
    """A live env lent by ``make_env``: stepped as itself, its ``close`` a no-op (its owner closes it)."""

    def __init__(self, env: VecEnv) -> None:
        self._env = env
        for k in ("name", "num_envs", "obs_shape", "obs_dtype", "num_actions", "continuous", "action_space",
                  "obs_finite"):
            setattr(self, k, getattr(env, k, None))
        super().__init__()

    def _reset(self, seed: int) -> np.ndarray:
        return self._env.reset(seed)

    def _step(self, actions: np.ndarray):
        obs, reward, done = self._env.step(actions)
        self.truncated, self.final_obs = self._env.truncated, self._env.final_obs
        return obs, reward, done


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
    m = RECALL_RE.match(name)
    if name.startswith(LIVE_PREFIX):  # a Python env object (its own num_envs), only in the process that has it
        if name not in LIVE_ENVS:
            raise ValueError(f"{name!r} was a Python env object handed to rtrl.api.train; it exists only in that "
                             "process: pass the env again, e.g. rtrl.api.evaluate(run_dir, env=...)")
        env = _Borrowed(LIVE_ENVS[name])
    elif m:
        delay = int(m.group(1)) if m.group(1) else RECALL_DEFAULT_DELAY
        env: VecEnv = RecallVecEnv(num_envs, delay, name=name)
    elif MEMORY_CHAIN_RE.match(name):
        env = MemoryChainVecEnv(num_envs, int(MEMORY_CHAIN_RE.match(name).group(1)), name=name)
    elif name.startswith("popgym-"):
        from rtrl.rl.envs.popgym import make_popgym

        env = make_popgym(name, num_envs)
    elif name.startswith("MiniGrid-"):
        from rtrl.rl.envs.minigrid import make_minigrid

        env = make_minigrid(name, num_envs)
    elif name.startswith("MemoryGym-"):
        from rtrl.rl.envs.memory_gym import make_memory_gym

        env = make_memory_gym(name, num_envs)
    elif name.startswith("MemoryMaze-"):
        from rtrl.rl.envs.memory_maze import MemoryMazeVecEnv

        env = MemoryMazeVecEnv(name, num_envs)
    elif name.startswith("procgen-"):
        from rtrl.rl.envs.procgen import ProcgenVecEnv

        env = ProcgenVecEnv(name, num_envs, evaluation=evaluation)
    elif name.startswith("ALE/"):
        from rtrl.rl.envs.atari import AtariVecEnv

        env = AtariVecEnv(name, num_envs, episodic_life=not evaluation)
    else:  # any other Gymnasium id, "module:EnvId", or a masked MuJoCo task
        from rtrl.rl.envs.generic import make_gym, registered, split_name, unknown_id_message

        _, module, env_id = split_name(name)
        if not registered(env_id, module):
            raise ValueError(unknown_id_message(name, ", ".join(ENV_NAMES[:8])))
        env = make_gym(name, num_envs)
    env.default_seed = int(seed)
    return env
