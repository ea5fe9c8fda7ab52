"""R2AC and PPO throughput per core, beside the raw environment's speed, all measured in one run.

    python benchmarks/r2ac_throughput.py                         # popgym RepeatPreviousEasy, every core it admits
    python benchmarks/r2ac_throughput.py --cores rtrl-lru,lstm --frames 100000
    python benchmarks/r2ac_throughput.py --quick                 # a smoke run: two cores, tiny budgets

Columns (frames = agent steps summed over streams; per second):
  env         the raw environment: ``make_env``'s vector env stepped with random actions in one
              process, at the default stream count (what the environment itself can do here)
  actor       env + the agent's batched inference (no learning), one process
  learner     learner updates alone, on a pre-collected rollout, one process
  end-to-end  ``rtrl train --env ENV --core CORE --total-frames F`` with every other option at its
              default, run as a user runs it: a new process, wall time from its start to its exit,
              start-up, evaluation and the run folder included
  e2e/env     the end-to-end rate over the raw env's, the bar of the scale issue (>= 0.5)
and, for the end-to-end run, the greedy return of its evaluation (held-out seeds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rtrl.rl.actors import ActorLoop
from rtrl.rl.agent import CORES
from rtrl.rl.config import PRESETS, build_agent
from rtrl.rl.envs import make_env
from rtrl.rl.learner import Learner


def rate(fn, frames_per_call: int, seconds: float) -> float:
    """Frames per second of ``fn`` over at least ``seconds`` (after one warm-up call)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * frames_per_call / (time.perf_counter() - t0)


def raw_env_rate(env_name: str, num_envs: int, seconds: float) -> float:
    env = make_env(env_name, num_envs, seed=0)
    env.reset(0)
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, env.num_actions, num_envs) for _ in range(64)]
    i = iter(range(10**12))
    fps = rate(lambda: env.step(actions[next(i) % 64]), num_envs, seconds)
    env.close()
    return fps


def components(env_name: str, core: str, seconds: float) -> tuple[float, float]:
    """(actor, learner) frames/s at the default preset's sizes, in this process, one thread."""
    cfg = dataclasses.replace(PRESETS["small"], env=env_name, core=core)
    B, M = cfg.num_envs, cfg.unroll
    env = make_env(env_name, B, seed=0)
    agent = build_agent(cfg, env)
    loop = ActorLoop(env, agent, M, 0, seed=1)
    with torch.no_grad():
        actor_fps = rate(loop.rollout, M * B, seconds)
        rollout, _ = loop.rollout()
    learner = Learner(agent, cfg.learner_config(), B)
    try:
        learner_fps = rate(lambda: learner.update(rollout), M * B, seconds)
    finally:
        env.close()
    return actor_fps, learner_fps


def end_to_end(env_name: str, core: str, frames: int, extra: list[str]) -> dict:
    """Run ``rtrl train`` as a user would; wall time from process start to exit."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "rtrl.cli", "train", "--preset", "ppo" if "ppo" in extra else "small",
               "--env", env_name, "--core", core, "--total-frames",
               str(frames), "--run-dir", str(Path(tmp) / "run"), "--no-progress", *extra]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if out.returncode != 0:
        return dict(error=(out.stderr.strip().splitlines() or ["?"])[-1])
    result = json.loads(out.stdout)
    return dict(wall=wall, fps=result["frames"] / wall, greedy=result.get("eval", {}).get("greedy", {}).get("mean"),
                train_return=result.get("train_mean_return_last100"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="popgym-RepeatPreviousEasy-v0")
    ap.add_argument("--cores", default="", help="comma-separated (default: every core the env admits)")
    ap.add_argument("--frames", type=int, default=400_000, help="end-to-end budget (the bar's: 400k)")
    ap.add_argument("--seconds", type=float, default=3.0, help="per component measurement")
    ap.add_argument("--ppo", action=argparse.BooleanOptionalAction, default=True, help="also PPO end to end")
    ap.add_argument("--quick", action="store_true", help="smoke run: rtrl-lru and none, small budgets")
    args = ap.parse_args()
    if args.quick:
        args.cores, args.frames, args.seconds = args.cores or "rtrl-lru,none", 20_000, 0.3
    cores = args.cores.split(",") if args.cores else list(CORES)
    torch.set_num_threads(1)
    small = PRESETS["small"]
    env_fps = raw_env_rate(args.env, small.num_envs, args.seconds)
    print(f"{args.env}: raw env {env_fps:,.0f} steps/s ({small.num_envs} envs, one process); defaults: "
          f"{small.num_envs} streams, M={small.unroll}, N={small.hidden_size}, actors {small.num_actors} "
          f"(-1: auto); end-to-end budget {args.frames:,} frames")
    print(f"{'core':>12} | {'actor':>8} | {'learner':>8} | {'end-to-end':>10} | {'e2e/env':>7} | {'wall s':>6} | greedy")
    runs = [(core, []) for core in cores] + ([("rtrl-lru", ["--algo", "ppo"])] if args.ppo else [])
    for core, extra in runs:
        name = core if not extra else f"ppo {core}"
        try:
            actor_fps, learner_fps = components(args.env, core, args.seconds) if not extra else (float("nan"),) * 2
        except ValueError as e:  # e.g. bptt-elstm: rollouts must be whole fixed-length episodes
            print(f"{name:>12} | skipped: {str(e).splitlines()[0][:110]}")
            continue
        e2e = end_to_end(args.env, core, args.frames, extra)
        if "error" in e2e:
            print(f"{name:>12} | {actor_fps:8.0f} | {learner_fps:8.0f} | failed: {e2e['error'][:90]}")
            continue
        greedy = "" if e2e["greedy"] is None else f"{e2e['greedy']:.3f}"
        print(f"{name:>12} | {actor_fps:8.0f} | {learner_fps:8.0f} | {e2e['fps']:10.0f} | {e2e['fps'] / env_fps:7.3f} | "
              f"{e2e['wall']:6.1f} | {greedy}", flush=True)


if __name__ == "__main__":
    main()
