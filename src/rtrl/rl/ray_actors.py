"""Actors on Ray: the same R2AC, scaled out over the machines of a Ray cluster.

    rtrl train --backend ray --num-actors 8                      # a local Ray instance
    rtrl train --backend ray --ray-address HOST:6379 --num-actors 64

Each Ray actor owns ``num_envs`` environments and steps them with batched inference (one remote
call per *rollout*, never per env step). The learner keeps exactly one rollout request in flight
per actor, passing the newest published weights as an object reference, so every actor's
rollouts arrive in order and a batch never holds two of one actor. A Ray actor that fails (its
env or acting code raises, it dies, or it sends no rollout for ``timeout_s``) is replaced after a
back-off, a bounded number of times in a row (its streams start new episodes, which resets their
RTRL state in the learner). Same contract, and the same :class:`~rtrl.rl.actors.Faults`, as the
local process backend in :mod:`rtrl.rl.actors`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Optional

import torch

from rtrl.rl.actors import Faults, raise_report, report
from rtrl.rl.learner import Rollout


class _ActorWorker:
    """Runs inside a Ray actor: its envs, a local agent, an ``ActorLoop``."""

    def __init__(self, k: int, cfg_dict: dict, incarnation: int) -> None:
        from rtrl.rl.envs import make_env
        from rtrl.rl.actors import ActorLoop
        from rtrl.rl.config import TrainConfig, build_agent

        torch.set_num_threads(1)
        self.k, self.error = k, None
        try:
            cfg = TrainConfig(**cfg_dict)
            seed = cfg.seed * 10_007 + 1000 * k + 100 * incarnation
            self.env = make_env(cfg.env, cfg.num_envs, seed=seed)
            self.agent = build_agent(cfg, self.env)
            self.loop = ActorLoop(self.env, self.agent, cfg.unroll, k * cfg.num_envs, seed=seed)
        except Exception as e:  # kept for the first rollout request: the learner reports it as any fault
            self.error = report(e)

    def rollout(self, weights: dict) -> tuple[int, Optional[Rollout], list | tuple]:
        """``(k, rollout, episode stats)``, or ``(k, None, report)`` for an exception (:func:`report`):
        returned, not raised, so that the learner gets the env's own message and traceback."""
        if self.error is not None:
            return self.k, None, self.error
        try:
            self.agent.load_state_dict(weights)
            with torch.no_grad():
                r, stats = self.loop.rollout()
        except Exception as e:
            return self.k, None, report(e)
        return self.k, r, stats


class RayActors:
    def __init__(self, cfg, agent) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError("--backend ray needs Ray: pip install 'rtrl[ray]'") from None
        self.ray = ray
        if not ray.is_initialized():
            if cfg.ray_address:
                ray.init(address=cfg.ray_address, log_to_driver=False)
            else:
                ray.init(num_cpus=max(os.cpu_count() or 1, cfg.num_actors), include_dashboard=False,
                         log_to_driver=False)
        self.remote_cls = ray.remote(num_cpus=1, max_restarts=0)(_ActorWorker)
        self.cfg = dataclasses.asdict(cfg)
        self.incarnation = [0] * cfg.num_actors
        self.restarts = 0
        self.faults = Faults(cfg.num_actors, cfg.actor_restarts, what="Ray actor")
        self.restart_at: dict[int, float] = {}  # failed actors, replaced then
        self.publish(agent)
        self.actors = [self.remote_cls.remote(k, self.cfg, 0) for k in range(cfg.num_actors)]
        self.inflight: dict = {}  # rollout request -> actor
        self.sent: dict = {}  # rollout request -> when it was sent
        for k in range(cfg.num_actors):
            self._request(k)

    def publish(self, agent) -> None:
        self.weights = self.ray.put({k: v.detach().cpu() for k, v in agent.state_dict().items()})

    def _request(self, k: int) -> None:
        ref = self.actors[k].rollout.remote(self.weights)
        self.inflight[ref], self.sent[ref] = k, time.monotonic()

    def _fail(self, k: int, line: str, trace: str = "") -> None:
        """Ray actor ``k`` failed: kill it and replace it after the back-off (or raise ``ActorError``)."""
        for ref in [ref for ref, j in self.inflight.items() if j == k]:
            del self.inflight[ref], self.sent[ref]
        try:
            self.ray.kill(self.actors[k])
        except Exception:  # already gone
            pass
        self.restart_at[k] = time.monotonic() + self.faults.failed(k, line, trace)

    def _restart_due(self) -> None:
        for k, at in list(self.restart_at.items()):
            if time.monotonic() >= at:
                del self.restart_at[k]
                self.incarnation[k] += 1
                self.restarts += 1
                self.actors[k] = self.remote_cls.remote(k, self.cfg, self.incarnation[k])
                self._request(k)

    def get(self, n: int, timeout_s: float = 300.0) -> tuple[list[Rollout], list]:
        """``n`` rollouts of distinct actors (``n <= num_actors``), each actor's in order. An actor that
        reports an exception, dies, or sends no rollout for ``timeout_s`` (a cluster may take minutes
        to start one) while this waits for it, has failed (see :class:`~rtrl.rl.actors.Faults`)."""
        batch, stats, taken = [], [], set()
        start = time.monotonic()
        while len(batch) < n:
            self._restart_due()
            waiting = [ref for ref, k in self.inflight.items() if k not in taken]  # distinct actors per batch
            next_restart = min(self.restart_at.values(), default=math.inf) - time.monotonic()
            ready, _ = self.ray.wait(waiting, num_returns=1, timeout=max(0.0, min(1.0, next_restart)))
            if not ready:
                now = time.monotonic()
                for ref in waiting:
                    if now - max(self.sent[ref], start) > timeout_s:
                        self._fail(self.inflight[ref],
                                   f"no rollout for {timeout_s:.0f} s: a hung environment?")
                continue
            ref = ready[0]
            k = self.inflight.pop(ref)
            del self.sent[ref]
            try:
                _, r, ep = self.ray.get(ref)
            except self.ray.exceptions.RayError as e:  # the actor died (or Ray lost it)
                self._fail(k, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
                continue
            if r is None:
                kind, line, trace = ep
                raise_report(kind, line)  # a divergence or a bad observation: the run stops
                self._fail(k, line, trace)
                continue
            batch.append(r)
            stats += ep
            taken.add(k)
            self.faults.delivered(k)
            self._request(k)
        return batch, stats

    def actor_handles(self) -> list:
        return list(self.actors)

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # one that failed is gone already
                pass
