"""Time to solve CartPole, beside the peers, in one run (``pip install -e ".[peers]"``).

    python benchmarks/peers.py                      # 3 seeds each, CartPole-v1 and CartPole without velocities
    python benchmarks/peers.py --seeds 0 --tasks cartpole

Each job is a fresh process, timed as a user runs it: from the moment it is started (interpreter,
imports, env creation included) until the mean return of its last 100 training episodes first
reaches 475 (cleanrl's and the zoo's "solved"), with the frames it took; a job that does not get
there within its budget says so. The jobs, one after another (never two at a time):

* ``sb3-ppo``: Stable-Baselines3's PPO with rl-baselines3-zoo's CartPole-v1 settings (8 envs x 32
  steps, batch 256, 20 epochs, gamma 0.98, GAE 0.8, lr and clip range decaying linearly from 1e-3 and
  0.2, no entropy bonus), on ``CartPole-v1``;
* ``sb3-recurrent-ppo``: sb3-contrib's RecurrentPPO (LSTM 256 for the actor and a separate one for
  the critic, its defaults) with the zoo's CartPoleNoVel settings (the same numbers) and observation
  normalisation (VecNormalize, rewards left alone: with them normalised too it did not reach 475
  within 100 k frames here), on CartPole with the velocities removed;
* ``rtrl``: our plain commands on the same tasks, ``rtrl train --env CartPole-v1 --core none`` (PPO,
  feedforward: SB3's match) and ``rtrl train --env PositionOnly/CartPole-v1`` (PPO with the exact-RTRL
  RTU: RecurrentPPO's match), their time to 475 read from the run's metrics.csv (logged every 5
  updates), and the run stopped there, as the peers' callback stops theirs.

It prints one line per job and, per task, the medians and the ratio peer / rtrl (above 1: rtrl is
faster). The peers are an optional extra (``peers``), never part of rtrl's install.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET, WINDOW = 475.0, 100
TASKS = {  # task -> (peer job, rtrl's plain command, frames budget)
    "cartpole": ("sb3-ppo", ["--env", "CartPole-v1", "--core", "none"], 200_000),
    "cartpole-novel": ("sb3-recurrent-ppo", ["--env", "PositionOnly/CartPole-v1"], 200_000),
}


def run_peer(job: str, seed: int, budget: int) -> None:
    """In a child process: train the peer and print ``{"frames", "time"}`` (``time``: the wall clock at
    which the last-100 mean first reached the target) or ``{"frames": null}``."""
    import gymnasium as gym
    import numpy as np
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    class Solved(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.returns: list[float] = []
            self.hit: "dict | None" = None

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.returns.append(info["episode"]["r"])
            if len(self.returns) >= WINDOW and np.mean(self.returns[-WINDOW:]) >= TARGET:
                self.hit = dict(frames=self.num_timesteps, time=time.time())
                return False
            return True

    def linear(start: float):
        return lambda progress: progress * start  # SB3 passes the remaining progress, 1 -> 0

    zoo = dict(n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
               learning_rate=linear(1e-3), clip_range=linear(0.2), seed=seed, verbose=0)
    if job == "sb3-ppo":
        from stable_baselines3 import PPO

        env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
        model = PPO("MlpPolicy", env, **zoo)
    else:
        from sb3_contrib import RecurrentPPO

        from rtrl.rl.envs.generic import ObservationMask

        class PositionsOnly(gym.ObservationWrapper):  # SB3 takes gymnasium.Env subclasses only
            def __init__(self, env: gym.Env) -> None:
                super().__init__(env)
                self.index = ObservationMask(env, "positions").index  # what rtrl's PositionOnly/ keeps
                self.observation_space = gym.spaces.Box(env.observation_space.low[self.index],
                                                        env.observation_space.high[self.index])

            def observation(self, obs):
                return obs[self.index]

        env = make_vec_env(lambda: PositionsOnly(gym.make("CartPole-v1")), n_envs=8, seed=seed)
        env = VecNormalize(env, norm_obs=True, norm_reward=False)
        model = RecurrentPPO("MlpLstmPolicy", env, **zoo)
    callback = Solved()
    model.learn(total_timesteps=budget, callback=callback)
    print(json.dumps(callback.hit or dict(frames=None)))


def first_solved(run_dir: Path) -> "dict | None":
    """The first row of an rtrl run's metrics.csv whose last-100 mean reached the target."""
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            try:  # (a row the run is still writing may be cut short: it is read on the next poll)
                if row.get("mean_return") not in (None, "", "nan") and float(row["episodes"]) >= WINDOW \
                        and float(row["mean_return"]) >= TARGET:
                    return dict(frames=int(float(row["step"])), time=float(row["time"]))
            except (TypeError, ValueError):
                return None
    return None


def timed(job: str, task: str, seed: int, tmp: Path) -> dict:
    """Start one job as a fresh process; its frames and seconds to the target (None: not reached)."""
    peer, ours, budget = TASKS[task]
    start = time.time()
    if job == "rtrl":
        run = tmp / f"{task}-{seed}"
        cmd = [sys.executable, "-m", "rtrl.cli", "train", *ours, "--total-frames", str(budget), "--seed", str(seed),
               "--eval-episodes", "0", "--no-progress", "--run-dir", str(run)]
        with tempfile.TemporaryFile("w+") as err:
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
            hit = None
            while p.poll() is None and hit is None:  # stopped once the target is logged: the rest of
                time.sleep(0.5)  # the budget would only lengthen the benchmark, not change the result
                hit = first_solved(run) if (run / "metrics.csv").exists() else None
            if hit is not None and p.poll() is None:
                p.kill()
                p.wait()
                p.returncode = 0
            elif p.returncode == 0:
                hit = first_solved(run)
            err.seek(0)
            p.stderr = err.read()
    else:
        cmd = [sys.executable, __file__, "--child", peer, "--seeds", str(seed), "--tasks", task, "--budget", str(budget)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        hit = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None
    if p.returncode != 0:
        print(f"  {job} on {task} seed {seed} failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
    out = dict(job=job if job == "rtrl" else peer, task=task, seed=seed, frames=None, seconds=None,
               total_s=round(time.time() - start, 1), failed=p.returncode != 0)
    if hit and hit.get("frames") is not None:
        out.update(frames=hit["frames"], seconds=round(hit["time"] - start, 1))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS))
    p.add_argument("--budget", type=int, help="frames a job may take (default: 200,000)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.budget:
        for task, (peer, ours, _) in TASKS.items():
            TASKS[task] = (peer, ours, args.budget)
    if args.child:
        run_peer(args.child, args.seeds[0], TASKS[args.tasks[0]][2])
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            for seed in args.seeds:
                for job in (TASKS[task][0], "rtrl"):  # interleaved: a slow spell of the machine hits both
                    r = timed(job, task, seed, Path(tmp))
                    results.append(r)
                    got = f"{r['seconds']} s, {r['frames']} frames" if r["frames"] else "not reached"
                    print(f"{task:15s} {r['job']:18s} seed {seed}: {got} (process ran {r['total_s']} s)", flush=True)
    print(f"\ntime to a last-100 mean of {TARGET:.0f}, median over seeds (unreached seeds count as the budget):")
    for task in args.tasks:
        peer = TASKS[task][0]
        med = {}
        for job in (peer, "rtrl"):
            rs = [r for r in results if r["task"] == task and r["job"] == job]
            secs = [r["seconds"] if r["seconds"] is not None else r["total_s"] for r in rs]
            frames = [r["frames"] if r["frames"] is not None else TASKS[task][2] for r in rs]
            med[job] = (statistics.median(secs), statistics.median(frames), sum(r["frames"] is not None for r in rs),
                        len(rs))
        (ps, pf, pk, n), (rs_, rf, rk, _) = med[peer], med["rtrl"]
        print(f"  {task}: {peer} {ps:.1f} s / {pf:,.0f} frames ({pk}/{n} reached) | rtrl {rs_:.1f} s / {rf:,.0f} "
              f"frames ({rk}/{n} reached) | time ratio {peer}/rtrl = {ps / rs_:.2f}")
    failed = [f"{r['job']} on {r['task']} seed {r['seed']}" for r in results if r["failed"]]
    if failed:  # a crashed job's "not reached" is no measurement: the ratios above are not to be used
        sys.exit(f"error: {len(failed)} job(s) crashed ({'; '.join(failed)}): see their messages above")


if __name__ == "__main__":
    main()
