"""Atari-2600 through ale-py's C++ ``AtariVectorEnv``, with the paper's pipeline.

    env = make_env("ALE/Breakout-v5", num_envs=8)                     # training
    env = make_env("ALE/Breakout-v5", num_envs=8, evaluation=True)    # whole games

The pipeline of the paper's code (``*NoFrameskip-v4`` + its wrappers), done in C++: up to 30
no-op steps at reset, frame skip 4 with a max over the last two frames, FIRE at reset where the
game needs it, 84×84 grey, a stack of 4 frames (observations ``(4, 84, 84)`` uint8), no sticky
actions, the minimal action set. Rewards are **not** clipped here: the learner clips them.

Episodic life: in training a lost life ends the episode as far as the agent is concerned
(``done``: the core's state is reset and the value is not bootstrapped across it, as the
paper's ``EpisodicLife`` wrapper does), but the game goes on until game over. Episode statistics
always count **whole games**, and ``evaluation=True`` envs end episodes only at game over: the
paper's code left episodic life on at test time, which scores single lives; we do not.
One agent step is 4 emulator frames.
"""

from __future__ import annotations

import re

import numpy as np

from rtrl.rl.envs.base import VecEnv

_NAME_RE = re.compile(r"^ALE/([A-Za-z0-9]+)-v5$")


def rom_id(game: str) -> str:
    """``MsPacman`` -> ``ms_pacman`` (ale-py's ROM ids)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", game).lower()


class AtariVecEnv(VecEnv):
    def __init__(self, name: str, num_envs: int, episodic_life: bool = True, num_threads: int = 0) -> None:
        m = _NAME_RE.match(name)
        if not m:
            raise ValueError(f"Atari names look like 'ALE/Breakout-v5', got {name!r}")
        try:
            from ale_py.vector_env import AtariVectorEnv
        except ImportError:
            raise ImportError(f"{name} needs ale-py: pip install 'rtrl[atari]' (or pip install ale-py)") from None
        try:
            self._env = AtariVectorEnv(
                rom_id(m.group(1)), num_envs, num_threads=num_threads or min(num_envs, 2),
                repeat_action_probability=0.0, noop_max=30, frameskip=4, maxpool=True, use_fire_reset=True,
                img_height=84, img_width=84, grayscale=True, stack_num=4, reward_clipping=False,
                episodic_life=False, life_loss_info=episodic_life, autoreset_mode="SameStep")
        except Exception as e:  # ale-py raises a bare RuntimeError for an unknown ROM
            raise ValueError(f"unknown Atari game in {name!r} ({e}); e.g. ALE/Breakout-v5, ALE/MsPacman-v5") from None
        self.name, self.num_envs = name, num_envs
        self.obs_shape, self.obs_dtype = (4, 84, 84), np.dtype(np.uint8)
        self.num_actions = int(self._env.single_action_space.n)
        self._frame = np.zeros(num_envs, np.int64)
        super().__init__()

    def _reset(self, seed: int) -> np.ndarray:
        obs, info = self._env.reset(seed=seed)
        self._frame = np.asarray(info["episode_frame_number"]).copy()
        return np.asarray(obs)

    def _step(self, actions: np.ndarray):
        obs, reward, terminated, truncated, info = self._env.step(actions)
        frame = np.asarray(info["episode_frame_number"])
        # a game restarted when its frame counter went back: that is game over (auto-reset)
        game_over = (frame < self._frame) | np.asarray(truncated)
        self._frame = frame.copy()
        done = np.asarray(terminated) | np.asarray(truncated)
        return np.asarray(obs), np.asarray(reward, np.float32), done | game_over, game_over

    def close(self) -> None:
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None
