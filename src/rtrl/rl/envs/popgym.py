"""popgym: ``popgym-<Task><Easy|Medium|Hard>-v0`` (``pip install popgym``).

The tasks whose optimal policy needs the previous action (popgym's ``obs_requires_prev_action``:
Battleship, Concentration, MineSweeper, MultiarmedBandit) get the one-hot of the previous (flat)
action appended, all zeros on an episode's first observation, as popgym's ``PreviousAction``
wrapper advises. The Pendulum tasks have continuous (Box) actions: the agent's Gaussian policy;
``popgym-Labyrinth*`` needs ``pip install mazelib`` as well.
"""

from __future__ import annotations

from importlib.util import find_spec

from rtrl.rl.envs.base import VecEnv, require
from rtrl.rl.envs.gymnasium import GymVecEnv, _any_action_decoder, _space_encoder


def make_popgym(name: str, num_envs: int) -> VecEnv:
    require("popgym", "popgym", name)
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
        continuous, n, decode = _any_action_decoder(e.action_space)
    except ValueError as err:
        for env in envs:
            env.close()
        raise ValueError(f"{name}: {err}") from None
    prev_action = bool(getattr(e.unwrapped, "obs_requires_prev_action", False))
    return GymVecEnv(name, envs, _space_encoder(e.observation_space), (n, decode), prev_action, continuous=continuous)
