"""Actors on Ray: the same R2AC, scaled out over the machines of a Ray cluster.

    rtrl train --backend ray --num-actors 8                      # a local Ray instance
    rtrl train --backend ray --ray-address HOST:6379 --num-actors 64

Each Ray actor owns ``num_envs`` environments and steps them with batched inference (one remote
call per *rollout*, never per env step). The learner keeps exactly one rollout request in flight
per actor, passing the newest published weights as an object reference, so every actor's
rollouts arrive in order and a batch never holds two of one actor. A Ray actor that dies is
replaced (its streams start new episodes, which resets their RTRL state in the learner).
Same contract as the local process backend in :mod:`rtrl.rl.actors`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Optional

import torch

from rtrl.rl.learner import DivergedError, Rollout


class _ActorWorker:
    """Runs inside a Ray actor: its envs, a local agent, an ``ActorLoop``."""

    def __init__(self, k: int, cfg_dict: dict, incarnation: int) -> None:
        from rtrl.rl.envs import make_env
        from rtrl.rl.actors import ActorLoop
        from rtrl.rl.config import TrainConfig, build_agent

        torch.set_num_threads(1)
        cfg = TrainConfig(**cfg_dict)
        seed = cfg.seed * 10_007 + 1000 * k + 100 * incarnation
        self.k = k
        self.env = make_env(cfg.env, cfg.num_envs, seed=seed)
        self.agent = build_agent(cfg, self.env)
        self.loop = ActorLoop(self.env, self.agent, cfg.unroll, k * cfg.num_envs, seed=seed)

    def rollout(self, weights: dict) -> tuple[int, Optional[Rollout], list | str]:
        """``(k, rollout, episode stats)``, or ``(k, None, message)`` if the weights diverged."""
        self.agent.load_state_dict(weights)
        try:
            with torch.no_grad():
                r, stats = self.loop.rollout()
        except DivergedError as e:  # returned, not raised: the learner stops with this one line
            return self.k, None, str(e)
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
        self.publish(agent)
        self.actors = [self.remote_cls.remote(k, self.cfg, 0) for k in range(cfg.num_actors)]
        self.inflight = {a.rollout.remote(self.weights): k for k, a in enumerate(self.actors)}

    def publish(self, agent) -> None:
        self.weights = self.ray.put({k: v.detach().cpu() for k, v in agent.state_dict().items()})

    def _replace(self, k: int, err: Exception) -> None:
        print(f"warning: Ray actor {k} died ({type(err).__name__}); replacing it, its streams start new episodes",
              file=sys.stderr, flush=True)
        self.incarnation[k] += 1
        self.restarts += 1
        self.actors[k] = self.remote_cls.remote(k, self.cfg, self.incarnation[k])

    def get(self, n: int, timeout_s: float = 300.0) -> tuple[list[Rollout], list]:
        """``n`` rollouts of distinct actors (``n <= num_actors``), each actor's in order."""
        batch, stats, taken = [], [], set()
        while len(batch) < n:
            waiting = [ref for ref, k in self.inflight.items() if k not in taken]  # distinct actors per batch
            ready, _ = self.ray.wait(waiting, num_returns=1, timeout=timeout_s)
            if not ready:
                raise RuntimeError(f"no rollout from any Ray actor for {timeout_s:.0f} s")
            ref = ready[0]
            k = self.inflight.pop(ref)
            try:
                _, r, ep = self.ray.get(ref)
                if r is None:
                    raise DivergedError(ep)
                batch.append(r)
                stats += ep
                taken.add(k)
            except self.ray.exceptions.RayActorError as e:
                self._replace(k, e)
            self.inflight[self.actors[k].rollout.remote(self.weights)] = k
        return batch, stats

    def actor_handles(self) -> list:
        return list(self.actors)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
