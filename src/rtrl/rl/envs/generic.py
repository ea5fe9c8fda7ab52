"""Any Gymnasium environment: a registered id, ``module:EnvId``, a masked MuJoCo task, or a user's
own ``gymnasium.vector.VectorEnv``.

    make_env("CartPole-v1", 8)                       # any registered id (Discrete actions)
    make_env("Pendulum-v1", 8)                       # Box actions: a Gaussian policy
    make_env("mypackage.envs:MyEnv-v0", 8)           # imports mypackage.envs (which registers MyEnv-v0)
    make_env("PositionOnly/Hopper-v5", 8)            # MuJoCo with joint positions only
    make_env("VelocityOnly/HalfCheetah-v5", 8)       # ... or joint velocities only
    from_vector_env(gym.make_vec("CartPole-v1", 8))   # a user's VectorEnv, any vectorization mode

Observations and actions are encoded as in :mod:`rtrl.rl.envs.gymnasium` (flat float32 vectors,
images kept as ``(C, H, W)`` uint8 pixels; Discrete, MultiDiscrete and Box actions). Terminated and
truncated episodes are kept apart (see :mod:`rtrl.rl.envs.base`): a time limit is bootstrapped.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import numpy as np

from rtrl.rl.envs.base import VecEnv
from rtrl.rl.envs.gymnasium import GymVecEnv, _any_action_decoder, _obs_encoder

MASKS = {"PositionOnly": "positions", "VelocityOnly": "velocities"}


def split_name(name: str) -> tuple[str, str, str]:
    """``"[PositionOnly/|VelocityOnly/][module:]EnvId"`` -> ``(mask, module, env_id)`` (empty strings
    where absent)."""
    mask = ""
    head, sep, rest = name.partition("/")
    if sep and head in MASKS:
        mask, name = head, rest
    module, sep, env_id = name.rpartition(":")
    return mask, module, env_id


def registered(env_id: str, module: str = "") -> bool:
    """Whether ``env_id`` is a registered Gymnasium id (after importing ``module``, if given)."""
    try:
        import gymnasium as gym
    except ImportError:
        return False
    if module:
        _import(module, env_id)
    return env_id in gym.registry


def _import(module: str, env_id: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"environment '{module}:{env_id}': cannot import module {module!r} ({e}); the part "
                          "before ':' must be an importable module that registers the env (is its package installed, "
                          "or its folder on PYTHONPATH?)") from None


def unknown_id_message(name: str, families: str) -> str:
    """The error for a name that is neither one of rtrl's families nor a registered Gymnasium id."""
    try:
        import gymnasium as gym

        ids = list(gym.registry)
    except ImportError:
        return (f"unknown environment {name!r}; supported families: {families}; any Gymnasium id once gymnasium is "
                "installed (pip install gymnasium)")
    _, module, env_id = split_name(name)
    close = difflib.get_close_matches(env_id, ids, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    where = f" after importing {module!r}" if module else ""
    return (f"unknown environment {name!r}; supported families: {families}; or any registered Gymnasium id "
            f"({env_id!r} is not registered{where}).{hint} An env your own package registers: pass "
            "'your.module:YourEnv-v0' (the module is imported first, registering it).")


def make_gym(name: str, num_envs: int) -> VecEnv:
    """``num_envs`` copies of a Gymnasium env (``name`` as in :func:`split_name`), stepped in a loop."""
    import gymnasium as gym

    mask, module, env_id = split_name(name)
    if module:
        _import(module, env_id)
    try:
        envs = [gym.make(env_id, disable_env_checker=True) for _ in range(num_envs)]
    except gym.error.Error as e:  # a missing dependency of a registered env (e.g. mujoco), a bad id
        raise ValueError(f"gymnasium could not make {env_id!r}: {e}") from None
    try:
        if mask:
            envs = [ObservationMask(e, MASKS[mask]) for e in envs]
    except ValueError as err:
        for env in envs:
            env.close()
        raise ValueError(f"{name}: {err}") from None
    return gym_vec_env(name, envs)


def gym_vec_env(name: str, envs: list) -> GymVecEnv:
    """A :class:`GymVecEnv` of gymnasium envs (one a copy of the others), encoders and decoders chosen by
    their spaces; unsupported spaces raise ``ValueError`` (the envs are closed)."""
    try:
        e = envs[0]
        continuous, n, decode = _any_action_decoder(e.action_space)
        size, encode, dtype = _obs_encoder(e.observation_space)
    except ValueError as err:
        for env in envs:
            env.close()
        raise ValueError(f"{name}: {err}") from None
    return GymVecEnv(name, envs, (size, encode), (n, decode), obs_dtype=dtype, continuous=continuous)


CLASSIC_MASKS = {  # the classic-control tasks' observation entries: (positions, velocities)
    "CartPole": ([0, 2], [1, 3]),  # x, θ | ẋ, θ̇ (sb3-contrib's CartPoleNoVel keeps the positions)
    "Pendulum": ([0, 1], [2]),  # cos θ, sin θ | θ̇ (PendulumNoVel)
    "Acrobot": ([0, 1, 2, 3], [4, 5]),  # cos/sin of both joints | both angular velocities
    "MountainCar": ([0], [1]),
    "MountainCarContinuous": ([0], [1]),
}


def _classic_index(env, keep: str) -> "np.ndarray | None":
    """The kept entries of a classic-control task's observation (``None`` for other envs)."""
    spec = getattr(env, "spec", None)
    name = getattr(spec, "name", None) if spec is not None else None
    if name not in CLASSIC_MASKS:
        return None
    return np.asarray(CLASSIC_MASKS[name][0 if keep == "positions" else 1])


class ObservationMask:
    """An env that shows only the positions (``"positions"``) or only the velocities
    (``"velocities"``) of its observation: the memory versions of control tasks. Classic control
    (CartPole, Pendulum, Acrobot, MountainCar) by the table ``CLASSIC_MASKS``; a MuJoCo env
    (Gymnasium's ``mujoco`` family, e.g. ``Hopper-v5``: the RTU paper's POMDPs) by its joints,
    contact forces and other extras dropped in both. Which entries are a MuJoCo env's positions is
    read from the simulator itself: the observation starts with ``qpos`` (less the first ``k``
    entries that the env excludes, the torso's x or x, y) followed by ``qvel``."""

    def __init__(self, env, keep: str) -> None:
        from gymnasium import spaces

        self.env, self.keep = env, keep
        self.action_space, self.spec, self.unwrapped = env.action_space, env.spec, env.unwrapped
        box = env.observation_space
        index = _classic_index(env, keep)
        self.index = index if index is not None else self._mujoco_index(env, keep)
        self.observation_space = spaces.Box(np.asarray(box.low).ravel()[self.index],
                                            np.asarray(box.high).ravel()[self.index], dtype=box.dtype)

    @staticmethod
    def _mujoco_index(env, keep: str) -> np.ndarray:
        data = getattr(env.unwrapped, "data", None)
        if data is None or not hasattr(data, "qpos"):
            raise ValueError(f"{keep}-only observations need a MuJoCo env (Hopper-v5, Walker2d-v5, HalfCheetah-v5, "
                             f"Ant-v5, ...) or a classic-control one ({', '.join(CLASSIC_MASKS)}), got "
                             f"{env.unwrapped.__class__.__name__}")
        obs, _ = env.reset(seed=0)
        obs = np.asarray(obs, np.float64).ravel()
        qpos, qvel = np.asarray(data.qpos).ravel(), np.asarray(data.qvel).ravel()
        for k in range(len(qpos) + 1):  # the first k entries of qpos are left out of the observation
            n = len(qpos) - k
            if len(obs) >= n + len(qvel) and np.allclose(obs[:n], qpos[k:]):
                break
        else:
            raise ValueError(f"cannot find the joint positions in {env.spec.id if env.spec else env}'s observation")
        return np.arange(n) if keep == "positions" else np.arange(n, n + len(qvel))

    def reset(self, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        return np.asarray(obs).ravel()[self.index], info

    def step(self, action):
        obs, r, terminated, truncated, info = self.env.step(action)
        return np.asarray(obs).ravel()[self.index], r, terminated, truncated, info

    def close(self) -> None:
        self.env.close()


def _autoreset_mode(venv):
    import gymnasium as gym

    mode = venv.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    return gym.vector.AutoresetMode(mode) if isinstance(mode, str) else mode


def _resets_by_mask(venv) -> bool:
    """Whether ``venv.reset(options={"reset_mask": m})`` resets exactly the sub-envs of ``m``
    (gymnasium's Sync and Async vector envs do, in every autoreset mode; a native vector env such as
    ``CartPoleVectorEnv`` ignores the option and resets them all)."""
    import gymnasium as gym

    return isinstance(venv, (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv))


def from_vector_env(venv, name: str = "") -> VecEnv:
    """A user's ``gymnasium.vector.VectorEnv`` as a :class:`VecEnv`, whatever its vectorization mode.

    Sync and Async vector envs are stepped as they are (:class:`VectorEnvAdapter`). A native vector
    env (``gym.make_vec(id, n)`` for an id with a ``vector_entry_point``, e.g. ``CartPoleVectorEnv``)
    with Gymnasium's default ``NEXT_STEP`` autoreset cannot reset one sub-env at the step its episode
    ends, which rtrl's episode boundaries need (:mod:`rtrl.rl.envs.base`): its ``n`` copies are made
    again from its spec, one ``gymnasium.Env`` each (the same dynamics, stepped in a loop), and one
    line says so."""
    import sys

    import gymnasium as gym

    if _resets_by_mask(venv) or _autoreset_mode(venv) != gym.vector.AutoresetMode.NEXT_STEP:
        return VectorEnvAdapter(venv, name)
    spec = getattr(venv, "spec", None)
    if spec is None:
        raise ValueError(f"{type(venv).__name__} resets its sub-envs on the step after an episode ends (Gymnasium's "
                         "NEXT_STEP autoreset) and cannot reset one sub-env by itself, and it has no spec to make "
                         "single copies from: give it autoreset_mode=SAME_STEP, or pass a factory (a function that "
                         "returns one gymnasium.Env) instead")
    drop = ("num_envs", "vectorization_mode", "vector_kwargs", "wrappers")
    kwargs = {k: v for k, v in spec.kwargs.items() if k not in drop}
    n = int(venv.num_envs)
    print(f"rtrl: {type(venv).__name__} cannot reset one sub-env at its episode's end (NEXT_STEP autoreset): "
          f"stepping {n} copies of gymnasium.make({spec.id!r}) instead", file=sys.stderr)
    return gym_vec_env(name or spec.id, [gym.make(spec.id, disable_env_checker=True, **kwargs) for _ in range(n)])


class VectorEnvAdapter(VecEnv):
    """A user's ``gymnasium.vector.VectorEnv`` as a :class:`VecEnv` (see :func:`from_vector_env`).

    It resets its sub-envs in the same step (``autoreset_mode=SAME_STEP``: the final observation is
    in ``info["final_obs"]``), or we reset the finished sub-envs ourselves with
    ``reset(options={"reset_mask": done})`` right after the step that ended them: with ``DISABLED``,
    and with Gymnasium's default ``NEXT_STEP`` (the masked reset also cancels the reset it would
    spend the next step on, whose action it would ignore); the latter needs a vector env that resets
    by mask (Sync or Async)."""

    def __init__(self, venv, name: str = "") -> None:
        import gymnasium as gym

        mode = _autoreset_mode(venv)
        if mode == gym.vector.AutoresetMode.NEXT_STEP and not _resets_by_mask(venv):
            raise ValueError(f"{type(venv).__name__} resets its sub-envs on the step after an episode ends (NEXT_STEP "
                             "autoreset) and cannot reset one by itself: pass it through rtrl.api (which makes "
                             "single copies from its spec) or give it autoreset_mode=SAME_STEP")
        self._same_step = mode == gym.vector.AutoresetMode.SAME_STEP
        self._venv, self.num_envs = venv, int(venv.num_envs)
        spec = getattr(venv, "spec", None)
        self.name = name or (spec.id if spec is not None else type(venv).__name__)
        try:
            self.continuous, self.num_actions, self._decode = _any_action_decoder(venv.single_action_space)
            size, self._encode, dtype = _obs_encoder(venv.single_observation_space)
        except ValueError as err:
            raise ValueError(f"{self.name}: {err}") from None
        self.obs_shape = (size,) if isinstance(size, int) else tuple(size)
        self.obs_dtype = np.dtype(dtype)
        self.action_space = venv.single_action_space
        super().__init__()

    def _encode_all(self, obs: Any, rows=None) -> np.ndarray:
        from gymnasium.vector.utils import iterate

        out = np.zeros((self.num_envs, *self.obs_shape), self.obs_dtype)
        for i, o in enumerate(iterate(self._venv.single_observation_space, obs) if rows is None else obs):
            out[i] = self._encode(o)
        return out

    def _reset(self, seed: int) -> np.ndarray:
        obs, _ = self._venv.reset(seed=[seed + i for i in range(self.num_envs)])
        return self._encode_all(obs)

    def _step(self, actions: np.ndarray):
        from gymnasium.vector.utils import iterate

        acts = [self._decode(a if self.continuous else int(a)) for a in actions]
        batch = np.stack(acts) if self.continuous or np.ndim(acts[0]) else np.asarray(acts)
        obs, reward, terminated, truncated, info = self._venv.step(batch)
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        done = terminated | truncated
        cut = truncated & ~terminated
        if self._same_step:
            enc = self._encode_all(obs)
            if cut.any():
                self.truncated = cut
                self.final_obs = np.zeros_like(enc)
                for i in np.flatnonzero(cut):
                    self.final_obs[i] = self._encode(info["final_obs"][i])
        else:  # DISABLED or NEXT_STEP: obs are the final ones where done; reset those sub-envs ourselves
            enc = self._encode_all(obs)
            if cut.any():
                self.truncated, self.final_obs = cut, enc.copy()
            if done.any():
                new, _ = self._venv.reset(options={"reset_mask": done})
                fresh = list(iterate(self._venv.single_observation_space, new))
                for i in np.flatnonzero(done):
                    enc[i] = self._encode(fresh[i])
        return enc, np.asarray(reward, np.float32), done

    def close(self) -> None:
        self._venv.close()
