"""End-to-end R2AC frames/s with 1, 2 and 4 actors, local processes and Ray, in one run,
beside the learner's own limit (updates on a pre-collected rollout, no acting).

    python benchmarks/scaling.py [--env popgym-RepeatPreviousEasy-v0] [--frames 40000] [--no-ray]
"""

from __future__ import annotations

import argparse
import time

import torch

from rtrl.rl.envs import make_env
from rtrl.rl.learner import Learner
from rtrl.rl.train import ActorLoop, TrainConfig, build_agent, train
from rtrl.utils import tune_cpu_allocator


def learner_limit(cfg: TrainConfig, seconds: float = 3.0) -> float:
    env = make_env(cfg.env, cfg.num_envs)
    agent = build_agent(cfg, env)
    loop = ActorLoop(env, agent, cfg.unroll, 0, seed=0)
    with torch.no_grad():
        rollout, _ = loop.rollout()
    learner = Learner(agent, cfg.learner_config(), cfg.num_envs)
    learner.update(rollout)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        learner.update(rollout)
        n += 1
    return n * cfg.unroll * cfg.num_envs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="popgym-RepeatPreviousEasy-v0")
    ap.add_argument("--frames", type=int, default=40_000)
    ap.add_argument("--num-envs", type=int, default=256)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    tune_cpu_allocator()
    torch.set_num_threads(1)
    base = TrainConfig(env=args.env, num_envs=args.num_envs, num_actors=0, unroll=10, total_frames=args.frames,
                       eval_episodes=0)
    print(f"{args.env}: RTRL-eLSTM core, {args.num_envs} envs per actor, M=10, one rollout per update; frames/s")
    print(f"learner alone (its limit): {learner_limit(base):8.0f}")
    t0 = time.perf_counter()
    train(base, None, progress=False)
    print(f"synchronous, no actor processes: {args.frames / (time.perf_counter() - t0):8.0f}")
    backends = ["local"] + ([] if args.no_ray else ["ray"])
    for backend in backends:
        for k in (1, 2, 4):
            cfg = TrainConfig(**{**base.__dict__, "num_actors": k, "backend": backend})
            t0 = time.perf_counter()
            train(cfg, None, progress=False)
            print(f"{backend:>5} backend, {k} actor(s): {args.frames / (time.perf_counter() - t0):8.0f}"
                  "   (includes starting the actors)")


if __name__ == "__main__":
    main()
