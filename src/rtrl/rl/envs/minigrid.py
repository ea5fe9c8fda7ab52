"""MiniGrid: ``MiniGrid-*`` (``pip install minigrid``), e.g. ``MiniGrid-MemoryS7-v0``.

The symbolic partial view (``7×7×3`` object, colour, state indices) is one-hot encoded per channel
(11 + 6 + 3 = 20 values per cell, cell-major), then the one-hot agent direction (4): a flat float32
vector of ``49·20 + 4 = 984`` for the default view. The mission string is dropped (constant in the
Memory tasks). All 7 MiniGrid actions are kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtrl.rl.envs.base import VecEnv, require
from rtrl.rl.envs.gymnasium import Encoder, GymVecEnv, _action_decoder


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


def make_minigrid(name: str, num_envs: int) -> VecEnv:
    require("minigrid", "minigrid", name)
    import gymnasium as gym

    if name not in gym.registry:
        memory = sorted(k for k in gym.registry if k.startswith("MiniGrid-Memory"))
        raise ValueError(f"unknown MiniGrid environment {name!r}; e.g. {', '.join(memory)} "
                         "(see the minigrid documentation for all MiniGrid-* ids)")
    envs = [gym.make(name, disable_env_checker=True) for _ in range(num_envs)]
    e = envs[0]
    return GymVecEnv(name, envs, _minigrid_encoder(e.observation_space), _action_decoder(e.action_space))
