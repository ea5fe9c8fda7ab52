"""Memory Maze (3-D, DMLab's maze generator, CPU rendering): real steps, and R2AC on top of it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("memory_maze", reason="pip install memory-maze==1.0.3 mujoco==3.17.0 gym==0.26.2")

from rtrl.rl.envs import make_env  # noqa: E402
from rtrl.rl.train import TrainConfig, train  # noqa: E402


def test_pixels_steps_seeds_and_names():
    env = make_env("MemoryMaze-9x9-v0", 2)
    first = env.reset(0)
    assert first.shape == (2, 3, 64, 64) and first.dtype == np.uint8 and env.num_actions == 6
    assert not np.array_equal(first[0], first[1])  # two seeds, two mazes
    for _ in range(5):
        obs, reward, done = env.step(np.array([1, 2]))
    assert obs.shape == (2, 3, 64, 64) and reward.dtype == np.float32 and not done.any()
    assert np.array_equal(env.reset(0)[0], first[0])  # same seed, same first view
    env.close()
    with pytest.raises(ValueError, match="MemoryMaze-9x9-v0"):
        make_env("MemoryMaze-8x8-v0", 1)


def test_r2ac_on_memory_maze(tmp_path):
    cfg = TrainConfig(env="MemoryMaze-9x9-v0", stem="nature", hidden_size=16, num_envs=1, unroll=4,
                      total_frames=8, eval_episodes=0, log_every=1, checkpoint_every=2)
    assert train(cfg, tmp_path / "run", progress=False)["updates"] == 2
