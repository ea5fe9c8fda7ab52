"""Gymnasium environments stepped in a loop: observation encoders, action decoders, ``GymVecEnv``.

Observations are encoded as a flat float32 vector: one-hot for ``Discrete`` and for each
component of ``MultiDiscrete``, ``Box`` flattened, ``Tuple``/``Dict`` concatenated. Actions:
``Discrete`` as is; ``MultiDiscrete`` flattened into one ``Discrete(prod(nvec))``, row-major
(``np.unravel_index``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from rtrl.rl.envs.base import VecEnv

Encoder = Callable[[Any], np.ndarray]


def _space_encoder(space: Any) -> tuple[int, Encoder]:
    """``(size, encode)`` turning one observation of ``space`` into a flat float32 vector."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        n, start, eye = int(space.n), int(space.start), np.eye(int(space.n), dtype=np.float32)
        return n, lambda x: eye[int(x) - start]
    if isinstance(space, spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec, np.int64).ravel()
        start = np.broadcast_to(np.asarray(getattr(space, "start", 0), np.int64), space.nvec.shape).ravel()
        offsets = np.concatenate(([0], np.cumsum(nvec)[:-1]))
        size = int(nvec.sum())

        def encode_md(x: Any) -> np.ndarray:
            out = np.zeros(size, np.float32)
            out[offsets + (np.asarray(x, np.int64).ravel() - start)] = 1.0
            return out

        return size, encode_md
    if isinstance(space, (spaces.Box, spaces.MultiBinary)):
        return int(np.prod(space.shape)), lambda x: np.asarray(x, np.float32).ravel()
    if isinstance(space, (spaces.Tuple, spaces.Dict)):
        subs = list(space.spaces.values()) if isinstance(space, spaces.Dict) else list(space.spaces)
        keys = list(space.spaces.keys()) if isinstance(space, spaces.Dict) else list(range(len(subs)))
        parts = [_space_encoder(s) for s in subs]
        encoders = [enc for _, enc in parts]
        return sum(p[0] for p in parts), lambda x: np.concatenate([e(x[k]) for k, e in zip(keys, encoders)])
    raise ValueError(
        f"observation space {space} is not supported (Discrete, MultiDiscrete, Box, MultiBinary, "
        "Tuple, Dict of those)"
    )


def _action_decoder(space: Any) -> tuple[int, Callable[[int], Any]]:
    """``(num_actions, decode)`` mapping a flat action index to one action of ``space``."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        start = int(space.start)
        return int(space.n), lambda a: a + start
    if isinstance(space, spaces.MultiDiscrete):
        nvec = tuple(int(n) for n in np.asarray(space.nvec).ravel())
        start = np.broadcast_to(np.asarray(getattr(space, "start", 0), np.int64), space.nvec.shape)
        shape, dtype = space.nvec.shape, space.dtype

        def decode_md(a: int) -> np.ndarray:
            return (np.array(np.unravel_index(a, nvec)).reshape(shape) + start).astype(dtype)

        return int(np.prod(nvec)), decode_md
    raise ValueError(f"action space {space} is not supported: R2AC needs discrete actions "
                     "(Discrete, or MultiDiscrete flattened into one Discrete)")


class GymVecEnv(VecEnv):
    """``num_envs`` gymnasium envs stepped in a Python loop, with observations encoded to flat
    float32 vectors by ``encoder`` and flat action indices decoded by ``decoder``.

    ``prev_action=True`` appends the one-hot of the previous flat action to each observation
    (zeros on an episode's first observation)."""

    def __init__(self, name: str, envs: list, encoder: tuple[int | tuple[int, ...], Encoder],
                 decoder: tuple[int, Callable[[int], Any]], prev_action: bool = False,
                 obs_dtype: Any = np.float32) -> None:
        self.name = name
        self.num_envs = len(envs)
        self._envs = envs
        (obs_dim, self._encode), (self.num_actions, self._decode) = encoder, decoder
        self._prev_action = prev_action
        if isinstance(obs_dim, int):
            self.obs_shape = (obs_dim + (self.num_actions if prev_action else 0),)
        else:  # pixels, (C, H, W)
            self.obs_shape = tuple(obs_dim)
        self.obs_dtype = np.dtype(obs_dtype)
        self._closed = False
        super().__init__()

    def _put(self, out: np.ndarray, i: int, obs: Any, action: Optional[int]) -> None:
        enc = self._encode(obs)
        out[i, : enc.shape[0]] = enc
        if self._prev_action and action is not None:
            out[i, enc.shape[0] + action] = 1.0

    def _reset(self, seed: int) -> np.ndarray:
        obs = np.zeros((self.num_envs, *self.obs_shape), self.obs_dtype)
        for i, env in enumerate(self._envs):
            o, _ = env.reset(seed=seed + i)
            self._put(obs, i, o, None)
        return obs

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs = np.zeros((self.num_envs, *self.obs_shape), self.obs_dtype)
        reward = np.zeros(self.num_envs, np.float32)
        done = np.zeros(self.num_envs, bool)
        for i, env in enumerate(self._envs):
            a = int(actions[i])
            o, r, terminated, truncated, _ = env.step(self._decode(a))
            reward[i] = r
            if terminated or truncated:
                # The env keeps its own RNG, so the next episode needs no new seed.
                done[i] = True
                o, _ = env.reset()
                self._put(obs, i, o, None)
            else:
                self._put(obs, i, o, a)
        return obs, reward, done

    def close(self) -> None:
        if not self._closed:
            for env in self._envs:
                env.close()
            self._closed = True
