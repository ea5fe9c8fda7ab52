"""Gymnasium environments stepped in a loop: observation encoders, action decoders, ``GymVecEnv``.

Observations are encoded as a flat float32 vector: one-hot for ``Discrete`` and for each
component of ``MultiDiscrete``, ``Box`` flattened, ``Tuple``/``Dict`` concatenated; an image
(a ``uint8`` ``Box`` of shape ``(H, W, C)`` with ``C`` in 1, 3, 4, or ``(H, W)``) is kept as
pixels ``(C, H, W)`` uint8 (:func:`_obs_encoder`). Actions: ``Discrete`` as is; ``MultiDiscrete``
flattened into one ``Discrete(prod(nvec))``, row-major (``np.unravel_index``); ``Box``
continuous, from the agent's normalised ``[-1, 1]`` (:func:`_box_decoder`).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from rtrl.rl.envs.base import ObservationError, VecEnv

Encoder = Callable[[Any], np.ndarray]


def _fitted(x: Any, space: Any, what: str = "") -> np.ndarray:
    """``x`` as an array of ``space``'s shape whose dtype converts to the space's within its kind
    (float64 to float32, int64 to uint8, never a float to an integer), else :class:`ObservationError`
    naming both shapes or dtypes. ``what``: the part of a Tuple/Dict observation, for the message."""
    a = np.asarray(x)
    part = f" (its part {what})" if what else ""
    if a.shape != tuple(space.shape):
        raise ObservationError(f"has shape {a.shape}{part}, but the run started with {tuple(space.shape)} "
                               f"(its observation space {space})")
    if not np.can_cast(a.dtype, space.dtype, "same_kind"):
        raise ObservationError(f"has dtype {a.dtype}{part}, but the run started with {space.dtype} "
                               f"(its observation space {space})")
    return a


def _in_range(raw: np.ndarray, v: np.ndarray, n: Any, space: Any, what: str) -> None:
    """A discrete observation ``raw``, as ``v`` (less the space's start), must lie in ``[0, n)``: out
    of range, its one-hot would wrap around or fail."""
    if (v < 0).any() or (v >= n).any():
        part = f" (its part {what})" if what else ""
        raise ObservationError(f"is {raw.tolist()}{part}, outside its observation space {space}")


def _space_encoder(space: Any, what: str = "") -> tuple[int, Encoder]:
    """``(size, encode)`` turning one observation of ``space`` into a flat float32 vector; ``encode``
    checks the observation against ``space`` (:func:`_fitted`, :func:`_in_range`)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        n, start, eye = int(space.n), int(space.start), np.eye(int(space.n), dtype=np.float32)

        def encode_d(x: Any) -> np.ndarray:
            a = np.asarray(x)
            if a.shape != () or a.dtype.kind not in "biu":
                part = f" (its part {what})" if what else ""
                raise ObservationError(f"is {a.tolist()!r}{part}, not one integer of its observation space "
                                       f"{space}")
            v = np.int64(a) - start
            _in_range(a, v, n, space, what)
            return eye[v]

        return n, encode_d
    if isinstance(space, spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec, np.int64).ravel()
        start = np.broadcast_to(np.asarray(getattr(space, "start", 0), np.int64), space.nvec.shape).ravel()
        offsets = np.concatenate(([0], np.cumsum(nvec)[:-1]))
        size = int(nvec.sum())

        def encode_md(x: Any) -> np.ndarray:
            a = _fitted(x, space, what)
            v = a.astype(np.int64).ravel() - start
            _in_range(a, v, nvec, space, what)
            out = np.zeros(size, np.float32)
            out[offsets + v] = 1.0
            return out

        return size, encode_md
    if isinstance(space, (spaces.Box, spaces.MultiBinary)):
        return int(np.prod(space.shape)), lambda x: _fitted(x, space, what).astype(np.float32).ravel()
    if isinstance(space, (spaces.Tuple, spaces.Dict)):
        subs = list(space.spaces.values()) if isinstance(space, spaces.Dict) else list(space.spaces)
        keys = list(space.spaces.keys()) if isinstance(space, spaces.Dict) else list(range(len(subs)))
        parts = [_space_encoder(s, f"{what}[{k!r}]") for k, s in zip(keys, subs)]
        encoders = [enc for _, enc in parts]
        return sum(p[0] for p in parts), lambda x: np.concatenate([e(x[k]) for k, e in zip(keys, encoders)])
    raise ValueError(
        f"observation space {space} is not supported (Discrete, MultiDiscrete, Box, MultiBinary, "
        "Tuple, Dict of those)"
    )


def finite_mask(space: Any) -> Optional[np.ndarray]:
    """Which entries of :func:`_space_encoder`'s flat vector for ``space`` must be finite: a ``Box``'s
    entries whose low and high bounds both are (NaN/Inf there is outside the space), and every
    one-hot; ``None`` for a space the vector encoding does not cover."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
        return (np.isfinite(low) & np.isfinite(high)).ravel()
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        return np.ones(_space_encoder(space)[0], bool)
    if isinstance(space, (spaces.Tuple, spaces.Dict)):
        subs = list(space.spaces.values()) if isinstance(space, spaces.Dict) else list(space.spaces)
        parts = [finite_mask(s) for s in subs]
        return None if any(m is None for m in parts) else np.concatenate(parts)
    return None


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


MAX_FLAT_ACTIONS = 4096  # a MultiDiscrete flattened beyond this would make a policy head too wide


def _box_decoder(space: Any) -> tuple[int, Callable[[np.ndarray], Any], np.ndarray, np.ndarray]:
    """``(size, decode, low, high)`` for a ``Box`` action space. The agent acts in a normalised
    space: a bounded dimension's ``[-1, 1]`` is mapped affinely onto ``[low, high]`` after clipping
    the agent's action to ``[-1, 1]`` (a Gaussian draw may fall outside); an unbounded dimension
    is passed as it is. ``low``/``high`` are the flat bounds (``±inf`` where unbounded)."""
    low = np.asarray(space.low, np.float64).ravel()
    high = np.asarray(space.high, np.float64).ravel()
    bounded = np.isfinite(low) & np.isfinite(high)
    lo, span = np.where(bounded, low, 0.0), np.where(bounded, high - low, 0.0)
    shape, dtype = space.shape, space.dtype

    def decode(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, np.float64)
        scaled = lo + (np.clip(a, -1.0, 1.0) + 1.0) * 0.5 * span
        return np.where(bounded, scaled, a).reshape(shape).astype(dtype)

    return int(np.prod(shape)), decode, low, high


def _any_action_decoder(space: Any) -> tuple[bool, int, Callable[[Any], Any]]:
    """``(continuous, size, decode)`` for a Discrete, MultiDiscrete or Box action space, or a
    ``ValueError`` naming what is supported."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        if not np.issubdtype(space.dtype, np.floating):
            raise ValueError(f"action space {space} is an integer Box: wrap the env so that its actions are a "
                             "Discrete/MultiDiscrete space (or a float Box)")
        size, decode, _, _ = _box_decoder(space)
        return True, size, decode
    if isinstance(space, spaces.MultiDiscrete) and int(np.prod(np.asarray(space.nvec, np.float64))) > MAX_FLAT_ACTIONS:
        raise ValueError(f"action space {space} has {int(np.prod(space.nvec))} joint actions; rtrl flattens a "
                         f"MultiDiscrete into one Discrete and allows at most {MAX_FLAT_ACTIONS}: wrap the env to "
                         "offer fewer joint actions")
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        n, decode = _action_decoder(space)
        return False, n, decode
    raise ValueError(f"action space {space} is not supported: use Discrete, MultiDiscrete or Box actions "
                     "(wrap the env, e.g. with a gymnasium ActionWrapper, to offer one of them)")


def _is_image(space: Any) -> bool:
    from gymnasium import spaces

    shape = getattr(space, "shape", None) or ()
    return (isinstance(space, spaces.Box) and space.dtype == np.uint8
            and (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4))))


def _obs_encoder(space: Any) -> tuple[int | tuple[int, ...], Encoder, Any]:
    """``(size or (C, H, W), encode, dtype)`` for any supported observation space: images as
    ``uint8`` pixels ``(C, H, W)``, everything else as a flat float32 vector (:func:`_space_encoder`)."""
    if _is_image(space):
        if len(space.shape) == 2:
            h, w = space.shape
            return (1, h, w), lambda x: _fitted(x, space).astype(np.uint8)[None], np.uint8
        h, w, c = space.shape

        def chw(x: Any) -> np.ndarray:
            return np.ascontiguousarray(_fitted(x, space).astype(np.uint8).transpose(2, 0, 1))

        return (c, h, w), chw, np.uint8
    size, encode = _space_encoder(space)
    return size, encode, np.float32


class GymVecEnv(VecEnv):
    """``num_envs`` gymnasium envs stepped in a Python loop, with observations encoded to flat
    float32 vectors by ``encoder`` and flat action indices decoded by ``decoder``.

    ``prev_action=True`` appends the one-hot of the previous flat action to each observation
    (zeros on an episode's first observation); for continuous actions, the previous action itself.
    ``continuous=True``: ``decoder`` maps a normalised action vector (:func:`_box_decoder`).
    An episode that ends with ``truncated`` and not ``terminated`` is reported in ``self.truncated``,
    its last observation in ``self.final_obs`` (see :mod:`rtrl.rl.envs.base`)."""

    def __init__(self, name: str, envs: list, encoder: tuple[int | tuple[int, ...], Encoder],
                 decoder: tuple[int, Callable[[int], Any]], prev_action: bool = False,
                 obs_dtype: Any = np.float32, continuous: bool = False) -> None:
        self.name = name
        self.num_envs = len(envs)
        self._envs = envs
        (obs_dim, self._encode), (self.num_actions, self._decode) = encoder, decoder
        self._prev_action = prev_action
        self.continuous = continuous
        self.action_space = getattr(envs[0], "action_space", None) if envs else None
        if isinstance(obs_dim, int):
            self.obs_shape = (obs_dim + (self.num_actions if prev_action else 0),)
        else:  # pixels, (C, H, W)
            self.obs_shape = tuple(obs_dim)
        self.obs_dtype = np.dtype(obs_dtype)
        self._encoded_shape = (obs_dim,) if isinstance(obs_dim, int) else tuple(obs_dim)
        space = getattr(envs[0], "observation_space", None) if envs else None
        mask = finite_mask(space) if isinstance(obs_dim, int) and space is not None else None
        if mask is not None and mask.shape == (obs_dim,):  # (not an encoder of its own, e.g. MiniGrid's)
            self.obs_finite = np.concatenate((mask, np.ones(self.obs_shape[0] - obs_dim, bool)))
        self._closed = False
        super().__init__()

    def _put(self, out: np.ndarray, i: int, obs: Any, action: Any) -> None:
        try:
            enc = self._encode(obs)
            if enc.shape != self._encoded_shape:  # an encoder of its own that did not check: never pad or cut
                raise ObservationError(f"encodes to shape {enc.shape}, but the run started with "
                                       f"{self._encoded_shape}")
        except ObservationError as e:
            raise e.located(index=i) from None
        out[i, : enc.shape[0]] = enc
        if self._prev_action and action is not None:
            if self.continuous:
                out[i, enc.shape[0]:] = np.clip(action, -1.0, 1.0)
            else:
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
            a = actions[i] if self.continuous else int(actions[i])
            o, r, terminated, truncated, _ = env.step(self._decode(a))
            reward[i] = r
            if terminated or truncated:
                # The env keeps its own RNG, so the next episode needs no new seed.
                done[i] = True
                if truncated and not terminated:  # a time limit: the learner bootstraps from o
                    if self.final_obs is None:
                        self.final_obs = np.zeros_like(obs)
                    self.truncated[i] = True
                    self._put(self.final_obs, i, o, a)
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
