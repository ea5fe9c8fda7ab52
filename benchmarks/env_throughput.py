"""Raw environment steps/s per suite beside end-to-end R2AC training frames/s, in one run.

    python benchmarks/env_throughput.py [--seconds 3] [--num-envs 8]

For each installed suite: random actions through our VecEnv (the adapter included), then a short
synchronous R2AC run (RTRL-eLSTM core, N = 64) on the same environment; for pixels once with the
IMPALA ResNet stem (the paper's) and once with the DQN "nature" CNN. Env construction and the
first reset are outside the timed part. Suites whose package is missing are listed as skipped,
with the install line.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rtrl.rl.envs import make_env
from rtrl.rl.train import TrainConfig, train
from rtrl.utils import tune_cpu_allocator

SUITES = ["rtrl-Recall-v0", "popgym-RepeatPreviousEasy-v0", "MiniGrid-MemoryS7-v0", "ALE/Breakout-v5",
          "procgen-chaser-hard-v0", "MemoryGym-MortarMayhem-v0", "MemoryMaze-9x9-v0"]


def env_rate(name: str, num_envs: int, seconds: float) -> float:
    env = make_env(name, num_envs)
    env.reset(0)
    rng = np.random.default_rng(0)
    for _ in range(3):  # warm-up: first renders, lazy allocations
        env.step(rng.integers(0, env.num_actions, num_envs))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(rng.integers(0, env.num_actions, num_envs))
        n += num_envs
    env.close()
    return n / (time.perf_counter() - t0)


def train_rate(name: str, num_envs: int, updates: int, stem: str = "auto") -> float:
    """Frames/s of synchronous R2AC, from the end of update 2 (after env construction) to the end."""
    cfg = TrainConfig(env=name, num_envs=num_envs, num_actors=0, unroll=10, total_frames=num_envs * 10 * (updates + 2),
                      eval_episodes=0, stem=stem, log_every=1)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", progress=False)
        with open(Path(tmp) / "run" / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
    (f0, t0), (f1, t1) = [(float(r["step"]), float(r["time"])) for r in (rows[1], rows[-1])]
    return (f1 - f0) / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--num-envs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--suites", default=",".join(SUITES), help="comma-separated env names (default: all)")
    args = ap.parse_args()
    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    print(f"{args.num_envs} envs, {args.threads} torch thread(s); steps/s = agent steps (Atari: x4 emulator frames)")
    train_rate("rtrl-Recall-v0", args.num_envs, 5)  # warm-up: imports, allocator, threads
    print(f"{'suite':>28} | {'env steps/s':>11} | {'R2AC frames/s':>13} | ratio | {'nature stem':>11} | ratio")
    for name in args.suites.split(","):
        try:
            env_fps = env_rate(name, args.num_envs, args.seconds)
        except ImportError as e:
            print(f"{name:>28} | skipped: {e}")
            continue
        pixels = len(make_env(name, 1).obs_shape) == 3
        train_fps = train_rate(name, args.num_envs, 5 if pixels else 20)
        line = f"{name:>28} | {env_fps:11.0f} | {train_fps:13.0f} | {train_fps / env_fps:5.3f}"
        if pixels:
            nature_fps = train_rate(name, args.num_envs, 20, stem="nature")
            line += f" | {nature_fps:11.0f} | {nature_fps / env_fps:5.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
