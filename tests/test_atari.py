"""Atari through ale-py: real emulator steps, the paper's pipeline, whole games at evaluation."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ale_py", reason="Atari needs the 'atari' extra: pip install 'rtrl[atari]'")

from rtrl.rl.envs.atari import rom_id  # noqa: E402
from rtrl.rl.envs import make_env  # noqa: E402
from rtrl.rl.train import TrainConfig, train  # noqa: E402


def play(env, steps: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    env.reset(seed)
    dones = 0
    for _ in range(steps):
        obs, reward, done = env.step(rng.integers(0, env.num_actions, env.num_envs))
        dones += int(done.sum())
    return obs, dones, env.pop_episode_stats()


def test_pipeline_shapes_and_names():
    assert rom_id("MsPacman") == "ms_pacman" and rom_id("Breakout") == "breakout"
    env = make_env("ALE/Breakout-v5", 2)
    obs = env.reset(0)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8 and env.num_actions == 4
    env.close()
    with pytest.raises(ValueError, match="unknown Atari game"):
        make_env("ALE/NoSuchGame-v5", 1)


def test_training_ends_episodes_at_lost_lives_evaluation_only_at_game_over():
    train_env, eval_env = make_env("ALE/Breakout-v5", 2), make_env("ALE/Breakout-v5", 2, evaluation=True)
    _, train_dones, train_games = play(train_env, 1500)
    _, eval_dones, eval_games = play(eval_env, 1500)
    assert eval_games and train_games
    assert eval_dones == len(eval_games)  # evaluation: an episode is a whole game
    assert train_dones >= 3 * len(train_games)  # training: Breakout has 5 lives per game
    # whole-game statistics in both: a random Breakout game lasts far longer than one life
    assert np.mean([n for _, n in train_games]) > 100 and np.mean([n for _, n in eval_games]) > 100


def test_rewards_are_not_clipped_by_the_env():
    env = make_env("ALE/Seaquest-v5", 4, evaluation=True)
    env.reset(0)
    rng, rewards = np.random.default_rng(0), []
    for _ in range(600):
        _, r, _ = env.step(rng.integers(0, env.num_actions, 4))
        rewards.append(r)
    assert np.max(rewards) > 1.0  # Seaquest scores 20 per enemy: the learner clips, not the env


def test_r2ac_runs_on_pixels(tmp_path):
    cfg = TrainConfig(env="ALE/Breakout-v5", hidden_size=32, num_envs=2, unroll=5, total_frames=40,
                      eval_episodes=0, log_every=1, checkpoint_every=4)
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["updates"] == 4 and (tmp_path / "run/checkpoints/latest.pt").is_file()
    # (no greedy evaluation here: an untrained greedy Breakout agent may never press FIRE, and a
    # whole game then lasts the standard cap of 108,000 frames)
