"""R2AC's training loop: IMPALA with V-trace, whose recurrent core may learn by exact RTRL.

Two ways to run the actors, same learner (:mod:`rtrl.rl.actors`, :mod:`rtrl.rl.ray_actors`):
``num_actors = 0`` steps the envs synchronously in this process (debugging, tests, tiny tasks);
``num_actors = K`` runs K actor processes (or Ray actors) that act while the learner learns; the
learner publishes its weights after every update. The learner (its agent, optimiser and the
per-stream RTRL bank) lives on ``cfg.device``; actors always act on the CPU, with a copy of the
weights refreshed before each rollout: at these model sizes a CPU step per environment step is
cheaper than a round trip to a GPU, and it keeps the GPU for the learner.

Resuming (``resume=True``) restores the weights, optimiser, schedule, counters, RNG and the
per-stream RTRL state; environments cannot be checkpointed, so every stream starts a new episode
(``done`` is set on its first step, which zeroes its state and sensitivities, as in any episode).
"""

from __future__ import annotations

import dataclasses
import sys
from collections import deque
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from rtrl.rl.actors import ActorError, InProcessActor, LocalActors
from rtrl.rl.envs.base import ObservationError
from rtrl.rl.config import TrainConfig
from rtrl.rl.learner import Learner, NonFiniteError, Rollout, stop_if_diverging
from rtrl.rl.runbook import RunBook, finish_run, open_run, start_training
from rtrl.runs import signals_held
from rtrl.state import RecurrentState
from rtrl.utils import ProgressBar, resolve_device


def _cat_rollouts(rs: list[Rollout]) -> Rollout:
    if len(rs) == 1:
        return rs[0]
    state = RecurrentState(torch.cat([r.state.c for r in rs], 0))
    extra = {}
    if all(r.truncated is not None for r in rs):
        extra = {f: torch.cat([getattr(r, f) for r in rs], 1) for f in ("truncated", "final_value")}
    return Rollout(*(torch.cat([getattr(r, f) for r in rs], 1) for f in ("obs", "reward", "done", "action", "logits")),
                   streams=torch.cat([r.streams for r in rs]), state=state, **extra)


def train_impala(cfg: TrainConfig, run_dir: Optional[str | Path] = None, resume: bool = False,
          progress: bool = True) -> dict:
    """Train an agent with R2AC; returns the final statistics (also in ``run_dir``)."""
    agent, spec = start_training(cfg)
    agent.to(resolve_device(cfg.device))  # the learner's copy; actors act with CPU copies
    learner = Learner(agent, cfg.learner_config(), cfg.num_streams)
    run = open_run(cfg, run_dir, resume, spec)
    book = RunBook(cfg, run, resume, "r2ac", dict(agent=agent, learner=learner))
    counters, env_seed = book.counters, book.env_seed
    if cfg.num_actors == 0:
        actors = InProcessActor(cfg, agent, spec, env_seed)
    else:
        actor_cfg = dataclasses.replace(cfg, seed=cfg.seed + counters["restarts"])
        if cfg.backend == "ray":
            from rtrl.rl.ray_actors import RayActors

            actors = RayActors(actor_cfg, agent)
        else:
            actors = LocalActors(actor_cfg, agent, spec)

    returns: deque = deque(maxlen=100)
    bar = ProgressBar(cfg.total_frames, counters["frames"], progress, unit="frame")

    in_row, finished = 0, False  # updates skipped in a row; whether the loop ran to its end
    try:
        while counters["frames"] < cfg.total_frames:
            rs, ep = actors.get(cfg.batch_rollouts)
            returns.extend(ret for ret, _ in ep)
            counters["episodes"] += len(ep)
            rollout = _cat_rollouts(rs)
            with signals_held():  # Ctrl-C/SIGTERM wait for the update and its counters
                try:
                    stats = learner.update(rollout)
                except NonFiniteError as e:
                    print(f"warning: {e}", file=sys.stderr, flush=True)
                    in_row += 1
                    stop_if_diverging(e, in_row, cfg.lr, cfg.grad_clip)
                    continue
                in_row = 0
                actors.publish(agent)
                frames = rollout.length * rollout.streams.numel()
                mean_ret = float(np.mean(returns)) if returns else float("nan")
                book.after_update(learner.updates, frames, mean_ret, stats)
            bar.update(frames, ret=mean_ret, upd=learner.updates)
        finished = True
    except (KeyboardInterrupt, ActorError, ObservationError):
        book.save()  # Ctrl-C, or an env that keeps failing, loses nothing: the state after the last update
        raise
    finally:
        bar.close()
        actors.close()
        if not finished and run is not None:
            run.close()  # stopped by an error or an interrupt: free the run folder (its lock) now
    result = dict(env=cfg.env, core=cfg.core, unroll=cfg.unroll, seed=cfg.seed, frames=counters["frames"],
                  updates=learner.updates, skipped_updates=learner.skipped,
                  actor_restarts=actors.restarts,
                  train_mean_return_last100=float(np.mean(returns)) if returns else None,
                  wall_s=round(book.elapsed(), 1))
    return finish_run(run, cfg, result)
