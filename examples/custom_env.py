"""Bring your own environment: a Gymnasium env of your own, trained with rtrl's Python API, then
evaluated, loaded as a policy and exported with its recurrent state.

    python examples/custom_env.py                   # ~1 minute; --core none for the memoryless control
    python examples/custom_env.py --tiny            # a smoke run (what the test suite runs)

The env, ``RememberTheSign-v0``: the first observation shows a cue ``±1``; then ``delay`` blank
steps; at the last step the agent must output a continuous action ``a ∈ [-1, 1]`` close to the cue
(reward ``1 − |a − cue|``, every other step 0). A memoryless policy earns 0 on average (it cannot
know the sign at the end); a policy that remembers earns up to 1. Box actions: rtrl uses a
Gaussian policy. Measured (150k frames, ~1 minute on one core): ``rtrl-lru`` reaches a greedy return
of 1.00 on held-out seeds, the feedforward ``--core none`` −0.07. From the command line the same env trains with
``rtrl train --env custom_env:RememberTheSign-v0`` (with ``examples/`` on ``PYTHONPATH``): the part
before the colon is imported, which registers the env.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class RememberTheSign(gym.Env):
    """Observation ``[cue, is_last_step]``; one Box action; ``delay + 2`` steps per episode."""

    def __init__(self, delay: int = 3) -> None:
        self.delay = delay
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.cue = 0, float(self.np_random.choice([-1.0, 1.0]))
        return np.array([self.cue, 0.0], np.float32), {}

    def step(self, action):
        last = self.t == self.delay + 1
        reward = 1.0 - abs(float(np.clip(action[0], -1, 1)) - self.cue) if last else 0.0
        self.t += 1
        obs = np.array([0.0, float(self.t == self.delay + 1)], np.float32)
        return obs, reward, last, False, {}


gym.register("RememberTheSign-v0", entry_point=RememberTheSign)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a few hundred frames: checks that everything runs")
    ap.add_argument("--core", default="rtrl-lru", help="any core of `rtrl train --help` (e.g. none, lstm)")
    ap.add_argument("--run-dir", type=Path, default=None, help="default: a temporary folder")
    args = ap.parse_args()
    from rtrl.api import PRESETS, evaluate, export, load_agent, train

    run_dir = args.run_dir or Path(tempfile.mkdtemp()) / "remember-the-sign"
    frames = 600 if args.tiny else 150_000
    # 1. train: PPO from its preset, any option of `rtrl train` as a keyword; the env by its registered id
    result = train(PRESETS["ppo"], env="RememberTheSign-v0", run_dir=run_dir, core=args.core, total_frames=frames,
                   num_envs=32, unroll=10, lr=3e-3, ppo_epochs=4, ppo_minibatches=4, entropy_weight=0.0,
                   eval_episodes=20, progress=not args.tiny)
    print(f"trained {result['frames']} frames; greedy return on held-out seeds {result['eval']['greedy']['mean']:.2f}")
    # 2. ... or hand rtrl a vector env you built yourself (sub-envs auto-reset in the same step)
    venv = gym.make_vec("RememberTheSign-v0", 8, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    print("evaluated on your own VectorEnv:", round(evaluate(run_dir, env=venv, episodes=16)["mean"], 2))
    # 3. load the policy and act in your own loop: the recurrent state is yours to carry
    policy = load_agent(run_dir)
    env = RememberTheSign()
    obs, _ = env.reset(seed=123)
    state, total, done = policy.initial_state(1), 0.0, False
    while not done:
        action, state = policy.act(obs[None], state)  # greedy; act(..., greedy=False) samples
        obs, reward, done, _, _ = env.step(action[0].numpy())
        total += reward
    print(f"one episode in your own loop: return {total:.2f}")
    # 4. export the acting step, state as explicit inputs and outputs
    for fmt in ("onnx", "torchscript"):
        try:
            print("exported", export(run_dir, fmt))
        except ImportError as e:  # onnx not installed
            print(f"skipped {fmt}: {e}")


if __name__ == "__main__":
    main()
