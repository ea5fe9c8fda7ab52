"""Memory Maze: a 3-D first-person maze built on DMLab's maze generator, rendered on the CPU.

    env = make_env("MemoryMaze-9x9-v0", num_envs=4)       # also 11x11, 13x13, 15x15

The closest substitute for the paper's DMLab-30 memory tasks that installs here (DMLab itself
needs a Bazel build from the internet). The agent collects coloured targets, repeatedly, in a
fixed random maze; the colour to find next is drawn as the image's border. Observations
``(3, 64, 64)`` uint8, 6 discrete actions (noop, forward, left, right, forward+left,
forward+right), episodes of 1000 steps (9x9) to 4000 (15x15) at 4 Hz control, reward 1 per
target reached. Install: ``pip install memory-maze==1.0.3 mujoco==3.17.0 gym==0.26.2``
(mujoco 4 breaks dm_control; ``import memory_maze`` needs the old ``gym`` package). Rendering
uses ``MUJOCO_GL=egl`` (Mesa's software EGL) unless ``MUJOCO_GL`` is already set, e.g. to
``osmesa``. About 50 steps/s per env on one CPU core: 3-D rendering dominates.

The envs are built by ``reset(seed)`` (env ``i`` with ``seed + i``, ~5 s each, as dm_control seeds an
env only when it is built); later episodes draw new mazes from each env's own generator.
"""

from __future__ import annotations

import os
import re

import numpy as np

from rtrl.rl.envs.base import VecEnv

_NAME_RE = re.compile(r"^MemoryMaze-(9x9|11x11|13x13|15x15)-v0$")
INSTALL = "pip install memory-maze==1.0.3 mujoco==3.17.0 gym==0.26.2"


class MemoryMazeVecEnv(VecEnv):
    num_actions = 6
    obs_shape = (3, 64, 64)
    obs_dtype = np.dtype(np.uint8)

    def __init__(self, name: str, num_envs: int) -> None:
        m = _NAME_RE.match(name)
        if not m:
            raise ValueError(f"Memory Maze names look like 'MemoryMaze-9x9-v0' (sizes 9x9, 11x11, 13x13, 15x15), "
                             f"got {name!r}")
        os.environ.setdefault("MUJOCO_GL", "egl")  # read when mujoco is first imported
        try:
            from memory_maze import tasks
        except ImportError as err:
            raise ImportError(f"{name} needs memory-maze: {INSTALL} ({err})") from None
        self._task = getattr(tasks, f"memory_maze_{m.group(1)}")
        self.name, self.num_envs = name, num_envs
        self._envs: list = []
        super().__init__()

    def _reset(self, seed: int) -> np.ndarray:
        # dm_control seeds an env only when it is built, so a reset rebuilds: same seed, same mazes
        self.close()
        self._envs = [self._task(image_only_obs=True, seed=seed + i) for i in range(self.num_envs)]
        return np.stack([_pixels(env.reset().observation) for env in self._envs])

    def _step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        obs = np.empty((self.num_envs, *self.obs_shape), np.uint8)
        reward = np.zeros(self.num_envs, np.float32)
        done = np.zeros(self.num_envs, bool)
        for i, env in enumerate(self._envs):
            ts = env.step(int(actions[i]))
            reward[i] = ts.reward or 0.0
            if ts.last():  # the time limit: the only way an episode ends
                done[i] = True
                ts = env.reset()
            obs[i] = _pixels(ts.observation)
        return obs, reward, done

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs = []


def _pixels(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image, np.uint8).transpose(2, 0, 1))
