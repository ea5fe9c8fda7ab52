"""ProcGen (procgen-mirror): real steps, training vs held-out evaluation levels, R2AC on top."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("procgen", reason="pip install --no-deps procgen-mirror==0.10.7 gym3==0.3.3")

from rtrl.rl.envs import make_env  # noqa: E402
from rtrl.rl.train import TrainConfig, train  # noqa: E402


def test_chaser_hard_steps_and_episodes():
    env = make_env("procgen-chaser-hard-v0", 4)
    obs = env.reset(0)
    assert obs.shape == (4, 3, 64, 64) and obs.dtype == np.uint8 and env.num_actions == 15
    rng, episodes = np.random.default_rng(0), []
    for _ in range(3000):
        obs, reward, done = env.step(rng.integers(0, 15, 4))
        episodes += env.pop_episode_stats()
        if episodes:
            break
    assert episodes and obs.shape == (4, 3, 64, 64)


def test_evaluation_uses_held_out_levels():
    train_env, eval_env = make_env("procgen-maze-memory-v0", 2), make_env("procgen-maze-memory-v0", 2, evaluation=True)
    a, b = train_env.reset(0), eval_env.reset(0)
    assert (train_env._start, train_env._levels) == (0, 500) and (eval_env._start, eval_env._levels) == (1000, 200)
    assert not np.array_equal(a, b)  # different levels, same seed
    with pytest.raises(ValueError, match="unknown ProcGen game"):
        make_env("procgen-nosuchgame-v0", 1)
    with pytest.raises(ValueError, match="no memory mode"):
        make_env("procgen-chaser-memory-v0", 1)


def test_r2ac_runs_on_procgen(tmp_path):
    cfg = TrainConfig(env="procgen-chaser-hard-v0", hidden_size=32, num_envs=2, unroll=5, total_frames=40,
                      eval_episodes=0, log_every=1, checkpoint_every=4)
    assert train(cfg, tmp_path / "run", progress=False)["updates"] == 4
