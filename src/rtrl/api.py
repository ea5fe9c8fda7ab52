"""The Python API: train, evaluate, load and export agents without the command line.

    from rtrl.api import TrainConfig, PRESETS, train, evaluate, load_agent, export

    result = train(env="Pendulum-v1", total_frames=100_000, run_dir="runs/pendulum")   # the preset for its family
    train(env=gym.make_vec("CartPole-v1", num_envs=8), run_dir="runs/mine")  # a VectorEnv (or a factory) of yours
    cfg = TrainConfig(env="Pendulum-v1", core="rtrl-lru", algo="impala")    # every `rtrl train` option, by hand
    train(cfg, run_dir="runs/r2ac")                                          # a dict of results
    print(evaluate("runs/pendulum", episodes=20))          # {"mean": ..., "std": ..., "returns": [...]}
    policy = load_agent("runs/pendulum")                   # a torch.nn.Module: initial_state, act, forward
    state = policy.initial_state(1)
    action, state = policy.act(obs[None], state)
    export("runs/pendulum", "onnx")                        # runs/pendulum/policy.onnx, state explicit

``env`` may be a name (any Gymnasium id, ``module:EnvId``, one of rtrl's families), a
``gymnasium.vector.VectorEnv`` (any vectorization and autoreset mode: see
:func:`rtrl.rl.envs.generic.from_vector_env`), a :class:`rtrl.rl.envs.VecEnv`, or a factory
(a callable returning a new ``gymnasium.Env``; ``cfg.num_envs`` copies are made). An env object lives
in this process only, so R2AC then runs its actor in-process (``num_actors = 0``) and the run folder
records the env as ``object:<name>``: evaluate such a run by passing the env again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from rtrl.rl.config import PRESETS, EnvSpec, TrainConfig
from rtrl.rl.envs import VecEnv, make_env
from rtrl.rl.policy import Policy, StreamPolicy, export, load_agent

__all__ = ["PRESETS", "EnvSpec", "Policy", "StreamPolicy", "TrainConfig", "VecEnv", "as_vec_env", "evaluate", "export", "load_agent",
           "make_env", "train"]


def as_vec_env(env: Any, num_envs: int = 1, name: str = "") -> VecEnv:
    """A :class:`VecEnv` for ``env``: a ``VecEnv`` as it is, a gymnasium ``VectorEnv`` adapted, a factory
    called ``num_envs`` times (each a ``gymnasium.Env``)."""
    if isinstance(env, VecEnv):
        return env
    try:
        import gymnasium as gym
    except ImportError:
        gym = None
    if gym is not None and isinstance(env, gym.vector.VectorEnv):
        from rtrl.rl.envs.generic import from_vector_env

        return from_vector_env(env, name)
    if gym is not None and isinstance(env, gym.Env):
        raise ValueError("pass a factory (a function or class that returns a new env) or a gymnasium VectorEnv, not "
                         "one gymnasium.Env: rtrl steps many copies of it")
    if callable(env):
        from rtrl.rl.envs.generic import gym_vec_env

        envs = [env() for _ in range(num_envs)]
        return gym_vec_env(name or getattr(env, "__name__", type(envs[0]).__name__), envs)
    raise ValueError(f"env must be a name, a gymnasium VectorEnv, an rtrl VecEnv or a factory, got {type(env).__name__}")


def _lend(env: Any, num_envs: int) -> tuple[str, VecEnv]:
    from rtrl.rl.envs.registry import LIVE_ENVS, LIVE_PREFIX

    vec = as_vec_env(env, num_envs)
    name = LIVE_PREFIX + vec.name
    LIVE_ENVS[name] = vec
    return name, vec


def _chosen_preset(env: Any, algo: str, core: Optional[str]) -> TrainConfig:
    """The preset ``rtrl train`` would choose for ``env`` (a name, an adapted env, or a factory, which is
    called once to read its spaces), said in one line."""
    import sys

    from rtrl.rl.config import describe_preset, preset_for

    if env is None or isinstance(env, str):
        name = preset_for(env or TrainConfig.env, algo, core=core)
    elif isinstance(env, VecEnv):
        name = preset_for(env.name, algo, EnvSpec.of(env), core)
    else:  # a factory
        probe = as_vec_env(env, 1)
        name = preset_for(probe.name, algo, EnvSpec.of(probe), core)
        probe.close()
    print(f"rtrl: {describe_preset(name)}", file=sys.stderr)
    return PRESETS[name]


def train(cfg: Optional[TrainConfig] = None, env: Any = None, run_dir: Optional[str | Path] = None,
          resume: bool = False, progress: bool = True, **options: Any) -> dict:
    """Train an agent (PPO, or R2AC with ``algo="impala"``) and return the final statistics.

    ``cfg``: a :class:`TrainConfig` (default: the preset ``rtrl train`` chooses for the env's family,
    printed in one line; ``PRESETS`` has them all); ``options`` override its fields. ``env``: see the
    module doc (default: ``cfg.env``). ``run_dir``: the run folder (config, metrics, checkpoints,
    evaluation; ``resume=True`` continues it); without one nothing is written and nothing can be
    loaded later."""
    from rtrl.rl.train import train as train_run

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"unknown training option(s) {', '.join(unknown)}; TrainConfig has: {', '.join(sorted(fields))}")
    live = env is not None and not isinstance(env, str)
    if live and not callable(env) or _is_vector(env):  # adapt an env object once (a factory: below, n copies)
        env = as_vec_env(env)
    if cfg is None:
        cfg = _chosen_preset(env if live else (env or options.get("env")), options.get("algo", "ppo"), options.get("core"))
    cfg = dataclasses.replace(cfg, **options)
    if not live:
        return train_run(dataclasses.replace(cfg, env=env or cfg.env), run_dir, resume, progress)
    if cfg.num_actors > 0:
        raise ValueError("an env object lives in this process: actor processes need an env name (a Gymnasium id or "
                         "'module:EnvId'); pass env as a string, or num_actors=0")
    name, vec = _lend(env, cfg.num_envs)
    from rtrl.rl.envs.registry import LIVE_ENVS

    try:
        return train_run(dataclasses.replace(cfg, env=name, num_envs=vec.num_envs, num_actors=0), run_dir, resume,
                         progress)
    finally:
        LIVE_ENVS.pop(name, None)


def _is_vector(env: Any) -> bool:
    """A gymnasium ``VectorEnv`` or an rtrl ``VecEnv`` (objects that some versions make callable)."""
    if isinstance(env, VecEnv):
        return True
    try:
        import gymnasium as gym
    except ImportError:
        return False
    return isinstance(env, (gym.vector.VectorEnv, gym.Env))


def evaluate(agent: str | Path | Policy | StreamPolicy, env: Any = None, episodes: int = 100, greedy: bool = True,
             seed: Optional[int] = None, checkpoint: str = "latest") -> dict:
    """Returns of ``episodes`` episodes of a run folder's checkpoint (or a :class:`Policy` /
    :class:`StreamPolicy`), the recurrent state carried through each episode and reset between them,
    on held-out env seeds.
    ``env``: as for :func:`train` (default: the run's env). Returns ``{"mean", "std", "returns"}``."""
    from rtrl.rl.envs.registry import LIVE_ENVS
    from rtrl.rl.runbook import HELD_OUT_SEED, evaluate as run_episodes

    given = isinstance(agent, (Policy, StreamPolicy))
    policy = agent if given else load_agent(agent, checkpoint)
    if env is None:
        if given:
            raise ValueError("evaluate(policy) needs env=... (a run folder knows its env; a policy does not)")
        import json

        env = json.loads((Path(agent) / "config.json").read_text())["env"]
    name, lent = (env, None) if isinstance(env, str) else _lend(env, min(64, episodes))
    seed = HELD_OUT_SEED if seed is None else seed
    torch.manual_seed(seed)
    try:
        rets = run_episodes(policy.agent, name, episodes, seed, greedy)
    finally:
        if lent is not None:
            LIVE_ENVS.pop(name, None)
    return dict(mean=float(np.mean(rets)), std=float(np.std(rets)), returns=rets)
