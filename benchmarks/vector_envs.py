"""Ways to step a batch of gymnasium envs, measured in one run: which should `make_env` use?

    python benchmarks/vector_envs.py [--num-envs 256] [--seconds 3]

For popgym RepeatPreviousEasy and MiniGrid-MemoryS7 (the Python envs our memory tasks use),
random actions, steps/s summed over the batch:
  ours        rtrl's VecEnv: a Python loop over the envs in this process, observations encoded
  sync        gymnasium.vector.SyncVectorEnv (the same loop, gymnasium's bookkeeping)
  async-1     gymnasium.vector.AsyncVectorEnv, one env per worker process (its design), 1 worker: the
              cost of a round trip per env step
  workers-K   K worker processes, each stepping its share of the batch with our loop, one round
              trip per batch step (what a subprocess backend for make_env would do)
Env construction is outside the timing. On a machine where the learner and an actor process
already use every core, a worker pool competes with them: compare with the end-to-end figures
of benchmarks/r2ac_throughput.py before choosing.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from rtrl.rl.envs import make_env

ENVS = ("popgym-RepeatPreviousEasy-v0", "MiniGrid-MemoryS7-v0")


def rate(step, num_envs: int, n_actions: int, seconds: float) -> float:
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, n_actions, num_envs) for _ in range(32)]
    for a in actions[:3]:
        step(a)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(actions[n % 32])
        n += 1
    return n * num_envs / (time.perf_counter() - t0)


def gym_sync(name: str, num_envs: int):
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers the ids)
    import popgym  # noqa: F401

    return gym.vector.SyncVectorEnv([lambda: gym.make(name, disable_env_checker=True)] * num_envs)


def gym_async_one(name: str):
    import gymnasium as gym

    def make():
        import minigrid  # noqa: F401
        import popgym  # noqa: F401

        return gym.make(name, disable_env_checker=True)

    return gym.vector.AsyncVectorEnv([make], shared_memory=False, context="spawn")  # popgym obs are ints: no shared buffer


def _worker(conn, name: str, n: int) -> None:
    env = make_env(name, n)
    conn.send(env.reset(0))
    while True:
        actions = conn.recv()
        if actions is None:
            break
        conn.send(env.step(actions))
    env.close()


class Workers:
    """K processes, each stepping ``num_envs / K`` envs of ``make_env``; one pipe round trip a step."""

    def __init__(self, name: str, num_envs: int, k: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self.sizes = [num_envs // k + (i < num_envs % k) for i in range(k)]
        self.conns, self.procs = [], []
        for n in self.sizes:
            a, b = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(b, name, n), daemon=True)
            p.start()
            self.conns.append(a)
            self.procs.append(p)
        for c in self.conns:
            c.recv()

    def step(self, actions):
        i = 0
        for c, n in zip(self.conns, self.sizes):
            c.send(actions[i:i + n])
            i += n
        parts = [c.recv() for c in self.conns]
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(3))

    def close(self) -> None:
        for c, p in zip(self.conns, self.procs):
            c.send(None)
            p.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-envs", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores, {args.num_envs} envs; steps/s summed over the batch")
    print(f"{'env':>30} | {'ours':>8} | {'sync':>8} | {'async-1':>8} | {'workers-1':>9} | {'workers-2':>9}")
    for name in ENVS:
        ours = make_env(name, args.num_envs)
        ours.reset(0)
        row = [rate(ours.step, args.num_envs, ours.num_actions, args.seconds)]
        n_actions = ours.num_actions
        ours.close()
        sync = gym_sync(name, args.num_envs)
        sync.reset(seed=0)
        row.append(rate(sync.step, args.num_envs, n_actions, args.seconds))
        sync.close()
        one = gym_async_one(name)
        one.reset(seed=0)
        row.append(rate(one.step, 1, n_actions, args.seconds))
        one.close()
        for k in (1, 2):
            w = Workers(name, args.num_envs, k)
            row.append(rate(w.step, args.num_envs, n_actions, args.seconds))
            w.close()
        print(f"{name:>30} | " + " | ".join(f"{r:8.0f}" for r in row[:3]) + " | "
              + " | ".join(f"{r:9.0f}" for r in row[3:]), flush=True)


if __name__ == "__main__":
    main()
