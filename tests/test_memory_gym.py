"""Memory Gym (a DMLab-30 memory-task substitute): real pixel steps, and R2AC on top of it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("memory_gym", reason="pip install --no-deps memory-gym==1.0.2")

from rtrl.rl.envs import make_env  # noqa: E402
from rtrl.rl.train import TrainConfig, train  # noqa: E402


@pytest.mark.parametrize("name", ["MemoryGym-MortarMayhem-v0", "MemoryGym-MysteryPath-v0"])
def test_pixels_steps_and_episodes(name):
    env = make_env(name, 2)
    obs = env.reset(0)
    assert obs.shape == (2, 3, 84, 84) and obs.dtype == np.uint8 and env.num_actions == 9
    rng = np.random.default_rng(0)
    episodes = []
    for _ in range(3000):  # until an episode ends and restarts
        obs, reward, done = env.step(rng.integers(0, env.num_actions, 2))
        episodes += env.pop_episode_stats()
        if episodes:
            break
    assert obs.shape == (2, 3, 84, 84) and episodes
    env.close()


def test_unknown_memory_gym_name():
    with pytest.raises(ValueError, match="MemoryGym-MortarMayhem-v0"):
        make_env("MemoryGym-Nope-v0", 1)
    with pytest.raises(ValueError, match="command_count"):
        make_env("MemoryGym-MortarMayhem-Grid-v0:commands=3", 1)


def test_reset_parameters_in_the_name():
    """3 commands instead of 10: a successful episode is shorter, and the parameter is really used."""
    env = make_env("MemoryGym-MortarMayhem-Grid-v0:command_count=3", 1)
    env.reset(0)
    assert env._envs[0].env.unwrapped.num_commands == 3
    env.close()


def test_r2ac_on_memory_gym(tmp_path):
    cfg = TrainConfig(env="MemoryGym-MortarMayhem-v0", hidden_size=32, num_envs=2, unroll=5, total_frames=40,
                      eval_episodes=0, log_every=1, checkpoint_every=4)
    assert train(cfg, tmp_path / "run", progress=False)["updates"] == 4
