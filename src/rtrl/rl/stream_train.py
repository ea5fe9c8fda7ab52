"""The training loop of the streaming agents (``rtrl train --algo stream-ac`` / ``stream-q``): one env,
one agent step and one update at a time, in the run folder every trainer uses. The agents and their
learners are :mod:`rtrl.rl.stream` and :mod:`rtrl.rl.stream_q`; this module only drives them (kept
apart so that the agents' modules import nothing of the run machinery, which imports them)."""

from __future__ import annotations

import sys
from collections import deque
from pathlib import Path
from typing import Optional

import numpy as np

from rtrl.rl.envs import make_env
from rtrl.rl.runbook import RunBook, finish_run, open_run, start_training
from rtrl.rl.stream import BLOCK, StreamAC
from rtrl.rl.stream_q import StreamQ
from rtrl.runs import signals_held
from rtrl.utils import ProgressBar


def train_stream(cfg, run_dir: Optional[str | Path] = None, resume: bool = False,
                 progress: bool = True) -> dict:
    """Train with stream AC(λ) (``cfg.algo == "stream-ac"``) or Q(λ) (``"stream-q"``,
    :mod:`rtrl.rl.stream_q`): one env, one update per step. The run
    folder, checkpoints (weights, normaliser, traces, the cores' states and sensitivities, RNG), resume,
    Ctrl-C and evaluation work as for PPO; the run book's "updates" are blocks of ``BLOCK`` steps.
    An env cannot be checkpointed, so a resumed run starts a new episode (which zeroes state and traces)."""
    agent, spec = start_training(cfg)
    if cfg.algo == "stream-q":
        learner = StreamQ.from_config(agent, cfg)
    else:
        learner = StreamAC.from_config(agent, cfg)
    run = open_run(cfg, run_dir, resume, spec)
    book = RunBook(cfg, run, resume, cfg.algo, dict(agent=agent, learner=learner))
    counters = book.counters
    env = make_env(cfg.env, 1, seed=book.env_seed)
    learner.begin(env.reset(book.env_seed))
    returns: deque = deque(maxlen=100)
    bar = ProgressBar(cfg.total_frames, counters["frames"], progress, unit="step")
    blocks, finished = -(-counters["frames"] // BLOCK), False  # a partial block counts as one
    try:
        while counters["frames"] < cfg.total_frames:
            n = min(BLOCK - counters["frames"] % BLOCK, cfg.total_frames - counters["frames"])
            sums: dict[str, float] = {}
            for _ in range(n):
                o, r, d = env.step(learner.act())
                stats = learner.learn(float(r[0]), o, bool(d[0]), bool(env.truncated[0]), env.final_obs)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
            episodes = env.pop_episode_stats()
            returns.extend(ret for ret, _ in episodes)
            counters["episodes"] += len(episodes)
            blocks += 1
            mean_ret = float(np.mean(returns)) if returns else float("nan")
            with signals_held():  # Ctrl-C/SIGTERM wait for the counters and the checkpoint
                book.after_update(blocks, n, mean_ret, dict({k: v / n for k, v in sums.items()},
                                                            skipped=learner.skipped))
            bar.update(n, ret=mean_ret)
        finished = True
    except KeyboardInterrupt:
        book.save()  # the weights as they are; the frames count finished blocks only
        raise
    finally:
        bar.close()
        env.close()
        if not finished and run is not None:
            run.close()
    if learner.skipped:
        print(f"warning: {learner.skipped} steps had a non-finite TD error and were skipped", file=sys.stderr)
    result = dict(algo=cfg.algo, env=cfg.env, core=cfg.core, seed=cfg.seed, frames=counters["frames"],
                  episodes=counters["episodes"], skipped_updates=learner.skipped,
                  train_mean_return_last100=float(np.mean(returns)) if returns else None,
                  wall_s=round(book.elapsed(), 1))
    return finish_run(run, cfg, result)
