"""Memory Gym (Mortar Mayhem, Mystery Path, Searing Spotlights): 84×84 RGB, as (3, 84, 84) uint8.

Install with ``pip install --no-deps memory-gym==1.0.2`` (its pins would downgrade gymnasium).
"""

from __future__ import annotations

import numpy as np

from rtrl.rl.envs.base import VecEnv, require
from rtrl.rl.envs.gymnasium import GymVecEnv, _action_decoder


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


def make_memory_gym(name: str, num_envs: int) -> VecEnv:
    """Memory Gym (Mortar Mayhem, Mystery Path, Searing Spotlights): 84×84 RGB, as (3, 84, 84) uint8.

    ``MemoryGym-<id>:key=value,...`` sets the env's reset parameters, e.g.
    ``MemoryGym-MortarMayhem-Grid-v0:command_count=3`` (3 commands to remember instead of 10).
    """
    import os

    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame: no sound card, no screen
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    require("memory_gym", "memory-gym --no-deps  (it also needs pygame-ce, which minigrid brings)", name)
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
