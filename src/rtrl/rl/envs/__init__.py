"""Batched environments for R2AC and PPO: one small interface over every supported family.

    env = make_env("popgym-RepeatPreviousEasy-v0", num_envs=32, seed=0)
    obs = env.reset(seed=0)                        # (num_envs, *obs_shape)
    obs, reward, done = env.step(actions)          # actions (num_envs,) int in [0, num_actions)
    for ret, length in env.pop_episode_stats(): ...
    env.close()

Episode boundaries, written once. The envs reset themselves: ``done[i]`` means env ``i``'s
episode ended with this step; ``reward[i]`` is that step's reward (it belongs to the episode
that ended), and ``obs[i]`` is already the *first* observation of the next episode. So the
learner's reset flag for the observation ``obs_t`` is ``done_{t-1}`` (``True`` for the
observations returned by :meth:`VecEnv.reset`). Terminated and truncated (time limit) episodes
are both ``done`` (the state is reset at the next observation), but a truncation is bootstrapped:
after each step ``env.truncated`` says which episodes a time limit cut and ``env.final_obs`` holds
the observations they stopped at (see :mod:`rtrl.rl.envs.base`).

Supported names (``ENV_NAMES``):

* ``rtrl-Recall-v0`` and ``rtrl-Recall<delay>-v0`` (e.g. ``rtrl-Recall10-v0``): an in-repo
  numpy memory task, no dependencies (see :class:`RecallVecEnv`). Delay 3 by default.
* ``rtrl-MemoryChain<length>-v0`` (e.g. ``rtrl-MemoryChain32-v0``): bsuite's memory_chain, in-repo
  numpy (see :mod:`rtrl.rl.envs.memory_chain`).
* ``popgym-<Task><Easy|Medium|Hard>-v0`` (``pip install popgym``), e.g.
  ``popgym-RepeatPreviousEasy-v0``. Observations are encoded as a flat float32 vector: one-hot
  for ``Discrete`` and for each component of ``MultiDiscrete``, ``Box`` flattened, ``Tuple``
  concatenated. Actions: ``Discrete`` as is; ``MultiDiscrete`` (Battleship, MineSweeper) is
  flattened into one ``Discrete(prod(nvec))``, row-major (``np.unravel_index``). The tasks whose
  optimal policy needs the previous action (popgym's ``obs_requires_prev_action``: Battleship,
  Concentration, MineSweeper, MultiarmedBandit) get the one-hot of the previous (flattened)
  action appended, all zeros on an episode's first observation, as popgym's ``PreviousAction``
  wrapper advises. The Pendulum tasks have continuous (Box) actions: a Gaussian policy;
  ``popgym-Labyrinth*`` needs ``pip install mazelib`` as well.
* ``MiniGrid-*`` (``pip install minigrid``), e.g. ``MiniGrid-MemoryS7-v0``: the symbolic
  partial view (``7×7×3`` object, colour, state indices) one-hot encoded per channel (11 + 6 + 3
  = 20 values per cell, cell-major), then the one-hot agent direction (4): a flat float32 vector
  of ``49·20 + 4 = 984`` for the default view. The mission string is dropped (constant in the
  Memory tasks). All 7 MiniGrid actions are kept.

* Any other registered Gymnasium id, ``module:EnvId`` (the module is imported first, registering
  the env) and ``PositionOnly/<MuJoCo id>`` / ``VelocityOnly/<MuJoCo id>`` (see
  :mod:`rtrl.rl.envs.generic`): Discrete, MultiDiscrete and Box actions.

The gymnasium envs are stepped in a plain Python loop inside the :class:`VecEnv`: on a 2-core
machine a subprocess vector env gains little, and the agent costs far more than these envs.
"""

from rtrl.rl.envs.base import VecEnv
from rtrl.rl.envs.recall import RECALL_DEFAULT_DELAY, RecallVecEnv
from rtrl.rl.envs.registry import ENV_NAMES, fork_safe, make_env

__all__ = ["ENV_NAMES", "RECALL_DEFAULT_DELAY", "RecallVecEnv", "VecEnv", "fork_safe", "make_env"]
