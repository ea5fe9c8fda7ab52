"""envpool (C++ vector envs) against rtrl's own Gymnasium loop, for the tasks the reference numbers use.

    pip install envpool          # not a dependency of rtrl: ~740 MB with its assets
    python benchmarks/envpool_speed.py [--envs CartPole-v1 Hopper-v5] [--num-envs 8 32] [--seconds 2]

Steps/s summed over the batch, the same pre-drawn actions for every stepper, env construction
outside the timing, three interleaved rounds (median):

  rtrl         ``make_env(id, n)``: rtrl's VecEnv, a Python loop over ``gymnasium.make(id)`` copies
               (what every rtrl run steps)
  envpool-K    ``envpool.make(id, env_type="gymnasium", num_envs=n, num_threads=K)``, K = 1, 2

Without envpool installed the script says so and times rtrl alone.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from rtrl.rl.envs import make_env


def actions_for(env, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    if env.continuous:
        return [rng.uniform(-1, 1, (n, env.num_actions)).astype(np.float32) for _ in range(32)]
    return [rng.integers(0, env.num_actions, n) for _ in range(32)]


def rate(step, actions: list[np.ndarray], n: int, seconds: float) -> float:
    for a in actions[:3]:
        step(a)
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step(actions[k % len(actions)])
        k += 1
    return k * n / (time.perf_counter() - t0)


def envpool_stepper(envpool, env_id: str, n: int, threads: int, continuous: bool, low, high):
    pool = envpool.make(env_id, env_type="gymnasium", num_envs=n, num_threads=threads, seed=0)
    pool.reset()
    if continuous:  # the same [-1, 1] -> [low, high] map rtrl's adapter applies
        return lambda a: pool.step(low + (a + 1) * 0.5 * (high - low))
    return lambda a: pool.step(a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--envs", nargs="+", default=["CartPole-v1", "Hopper-v5"])
    ap.add_argument("--num-envs", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    try:
        import envpool
    except ImportError:
        envpool = None
        print("envpool is not installed (pip install envpool): timing rtrl's stepper alone")
    for env_id in args.envs:
        for n in args.num_envs:
            ours = make_env(env_id, n)
            ours.reset(0)
            actions = actions_for(ours, n, np.random.default_rng(0))
            steppers = {"rtrl": ours.step}
            if envpool is not None:
                low = np.asarray(ours.action_space.low) if ours.continuous else None
                high = np.asarray(ours.action_space.high) if ours.continuous else None
                for k in (1, 2):
                    steppers[f"envpool-{k}"] = envpool_stepper(envpool, env_id, n, k, ours.continuous, low, high)
            rates: dict[str, list[float]] = {k: [] for k in steppers}
            for _ in range(3):
                for k, step in steppers.items():
                    rates[k].append(rate(step, actions, n, args.seconds))
            base = statistics.median(rates["rtrl"])
            cells = [f"{k} {statistics.median(v):,.0f}/s ({statistics.median(v) / base:.2f}x)" for k, v in rates.items()]
            print(f"{env_id:14s} n={n:<3d} " + " | ".join(cells), flush=True)
            ours.close()


if __name__ == "__main__":
    main()
