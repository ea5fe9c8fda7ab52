"""R2AC throughput per core, beside the raw environment speed, all measured in one run.

    python benchmarks/r2ac_throughput.py [--env popgym-RepeatPreviousEasy-v0] [--num-envs 16] [--unroll 10]

Columns (frames = agent steps, summed over streams):
  env        raw env.step with random actions
  actor      env + batched inference of the agent (no learning)
  learner    learner updates alone, on a pre-collected rollout
  end-to-end synchronous training (rtrl.rl.train.train with num_actors=0, no run folder)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rtrl.rl.agent import CORES
from rtrl.rl.envs import make_env
from rtrl.rl.learner import Learner
from rtrl.rl.train import ActorLoop, TrainConfig, build_agent, train
from rtrl.utils import tune_cpu_allocator


def rate(fn, frames_per_call: int, seconds: float) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * frames_per_call / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="popgym-RepeatPreviousEasy-v0")
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--unroll", type=int, default=10)
    ap.add_argument("--hidden-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (small models run best on 1)")
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = ap.parse_args()
    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    B, M = args.num_envs, args.unroll
    env = make_env(args.env, B, seed=0)
    env.reset(0)
    rng = np.random.default_rng(0)
    env_fps = rate(lambda: env.step(rng.integers(0, env.num_actions, B)), B, args.seconds)
    print(f"{args.env}: {B} envs, M={M}, N={args.hidden_size}, {torch.get_num_threads()} threads; frames/s")
    print(f"{'core':>12} | {'env':>8} | {'actor':>8} | {'learner':>8} | {'end-to-end':>10} | e2e/env")
    for core in CORES:
        cfg = TrainConfig(env=args.env, core=core, hidden_size=args.hidden_size, unroll=M, num_envs=B,
                          total_frames=10**9, eval_episodes=0, threads=args.threads)
        agent = build_agent(cfg, env)
        loop = ActorLoop(env, agent, M, 0, seed=1)
        with torch.no_grad():
            actor_fps = rate(loop.rollout, M * B, args.seconds)
            rollout, _ = loop.rollout()
        learner = Learner(agent, cfg.learner_config(), B)
        learner_fps = rate(lambda: learner.update(rollout), M * B, args.seconds)
        frames = max(int(args.seconds * 0.6 * min(actor_fps, learner_fps)) // (M * B), 2) * M * B
        t0 = time.perf_counter()
        train(TrainConfig(**{**cfg.__dict__, "total_frames": frames}), None, progress=False)
        e2e = frames / (time.perf_counter() - t0)
        print(f"{core:>12} | {env_fps:8.0f} | {actor_fps:8.0f} | {learner_fps:8.0f} | {e2e:10.0f} | {e2e / env_fps:6.3f}")


if __name__ == "__main__":
    main()
