"""The cost of one streaming agent step (act + update) per core, beside the feed-forward core, in one run.

    python benchmarks/streaming.py                           # rtrl-rtu tbptt-rtu none, the stream preset
    python benchmarks/streaming.py --cores rtrl-rtu rtrl-lru none --steps 5000
    python benchmarks/streaming.py --env rtrl-MemoryChain32-v0 --json out.json
    python benchmarks/streaming.py --cores rtrl-rtu none --compile   # also each with torch.compile'd networks

One step is what ``rtrl train --algo stream-ac`` does per environment step: the actor's and the
critic's forward passes (with the exact-RTRL sensitivities for ``rtrl-*`` cores), the environment's
step, the bootstrap value, both gradients, the traces and the two ObGD steps, normalisation
included. The sizes are the ``stream`` preset's (``--hidden-size``, ``--width`` change them). Cores
are timed in turn, ``--reps`` rounds of ``--steps`` steps each (after ``--warmup`` steps), so that
load on the machine falls on all of them alike; the median round counts. ``env`` is the environment's
own step with a fixed action, so that the agent's share can be read off. Torch runs on one thread (the
sizes are small; more threads only add synchronisation). ``--compile`` adds, for each core, a twin
whose actor and critic networks (the layers above the core) run through ``torch.compile`` (inductor,
its default mode); its compile time is reported apart, outside the timed rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from rtrl.rl.config import PRESETS
from rtrl.rl.envs import make_env
from rtrl.rl.stream import STREAM_CORES, StreamAC, StreamAgent


def _learner(core: str, env, hidden: int, width: int, seed: int, compiled: bool = False) -> StreamAC:
    cfg = PRESETS["stream"]
    torch.manual_seed(seed)
    agent = StreamAgent(env.obs_shape, env.num_actions, core, hidden, width, continuous=env.continuous,
                        obs_norm=cfg.obs_norm, activation=cfg.activation)
    if compiled:  # the same parameters, run through compiled forward and backward graphs
        agent.actor, agent.critic = torch.compile(agent.actor), torch.compile(agent.critic)
    learner = StreamAC(agent, cfg.lr, cfg.discount, cfg.trace_lambda, cfg.kappa_policy, cfg.kappa_value,
                       cfg.entropy_weight, cfg.reward_scale)
    learner.begin(env.reset(seed))
    return learner


def _steps(learner: StreamAC, env, n: int) -> float:
    """Seconds for ``n`` full steps."""
    start = time.perf_counter()
    for _ in range(n):
        o, r, d = env.step(learner.act())
        learner.learn(float(r[0]), o, bool(d[0]), bool(env.truncated[0]), env.final_obs)
    return time.perf_counter() - start


def _env_only(env, n: int) -> float:
    action = torch.zeros(1, dtype=torch.long).numpy()
    start = time.perf_counter()
    for _ in range(n):
        env.step(action)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cores", nargs="+", default=["rtrl-rtu", "tbptt-rtu", "none"], choices=STREAM_CORES)
    p.add_argument("--env", default="rtrl-MemoryChain32-v0")
    p.add_argument("--hidden-size", type=int, default=PRESETS["stream"].hidden_size)
    p.add_argument("--width", type=int, default=PRESETS["stream"].encoder_width)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time each core with torch.compile'd networks")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cores = list(dict.fromkeys(args.cores + ([] if "none" in args.cores else ["none"])))  # the reference
    runs = cores + ([f"{c}+compile" for c in cores] if args.compile else [])
    envs = {r: make_env(args.env, 1) for r in runs}
    learners, compile_s = {}, {}
    for r in runs:
        start = time.perf_counter()
        learners[r] = _learner(r.split("+")[0], envs[r], args.hidden_size, args.width, seed=0,
                               compiled=r.endswith("+compile"))
        _steps(learners[r], envs[r], args.warmup)  # compiles on the first steps
        compile_s[r] = time.perf_counter() - start
    rounds: dict[str, list[float]] = {r: [] for r in runs}
    env_rounds = []
    for _ in range(args.reps):
        for r in runs:
            rounds[r].append(_steps(learners[r], envs[r], args.steps) / args.steps)
        env_rounds.append(_env_only(envs[cores[0]], args.steps) / args.steps)
    per_step = {c: statistics.median(v) for c, v in rounds.items()}
    env_s = statistics.median(env_rounds)
    print(f"{args.env}, hidden {args.hidden_size}, MLP {args.width}, {args.steps} steps x {args.reps} rounds "
          f"(median), 1 thread; env step alone {env_s * 1e6:.0f} us")
    print(f"{'core':<20} {'ms/step':>8} {'steps/s':>9} {'x none':>7}  set-up + warm-up s")
    out = dict(env=args.env, hidden_size=args.hidden_size, width=args.width, env_step_s=env_s, cores={})
    for r in runs:
        ratio = per_step[r] / per_step["none"]
        print(f"{r:<20} {per_step[r] * 1e3:>8.3f} {1 / per_step[r]:>9.0f} {ratio:>7.2f}  {compile_s[r]:.1f}")
        out["cores"][r] = dict(step_s=per_step[r], steps_per_s=1 / per_step[r], ratio_to_none=ratio,
                               rounds_s=rounds[r], setup_s=compile_s[r])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
