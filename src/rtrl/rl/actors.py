"""Actors: step environments with the behaviour policy and cut rollouts for the learner.

``ActorLoop`` steps one ``VecEnv`` in the calling process. ``LocalActors`` runs ``K`` of them in
actor processes (IMPALA, as torchbeast's monobeast): each steps its own batch of ``num_envs``
environments with batched inference on the *shared* weights, and sends whole rollouts through a
queue. Streams: actor ``k``'s environment ``i`` is stream ``k * num_envs + i``. Every rollout of
an actor covers all its streams, in time order, and a batch never holds two rollouts of one
actor, so each stream's RTRL state advances in order in the learner.
"""

from __future__ import annotations

import dataclasses
import queue as queue_lib
import sys
from collections import deque
from dataclasses import dataclass

import torch

from rtrl.rl.agent import Agent
from rtrl.rl.config import TrainConfig, build_agent
from rtrl.rl.learner import Rollout


class ActorLoop:
    """Steps one ``VecEnv`` with an agent's behaviour policy and cuts rollouts of ``unroll`` steps."""

    def __init__(self, env, agent: Agent, unroll: int, first_stream: int, seed: int) -> None:
        self.env, self.agent, self.unroll = env, agent, unroll
        B = env.num_envs
        self.streams = torch.arange(first_stream, first_stream + B)
        self.obs = torch.as_tensor(env.reset(seed))
        self.reward = torch.zeros(B)
        self.done = torch.ones(B, dtype=torch.bool)  # the first observation starts an episode
        self.state = agent.initial_state(B, learner=False)

    def rollout(self) -> tuple[Rollout, list[tuple[float, int]]]:
        M, B = self.unroll, self.env.num_envs
        obs = torch.empty(M + 1, *self.obs.shape, dtype=self.obs.dtype)
        reward, done = torch.empty(M + 1, B), torch.empty(M + 1, B, dtype=torch.bool)
        action = torch.empty(M, B, dtype=torch.long)
        logits = torch.empty(M, B, self.agent.num_actions)
        state0 = self.state
        for t in range(M + 1):
            obs[t], reward[t], done[t] = self.obs, self.reward, self.done
            if t == M:
                break
            action[t], logits[t], self.state = self.agent.act(self.obs, self.reward, self.done, self.state)
            o, r, d = self.env.step(action[t].numpy())
            self.obs, self.reward, self.done = torch.as_tensor(o), torch.as_tensor(r, dtype=torch.float32), torch.as_tensor(d)
        return Rollout(obs, reward, done, action, logits, self.streams, state0), self.env.pop_episode_stats()


def _actor_process(k: int, cfg_dict: dict, shared: Agent, out_queue, stop, incarnation: int = 0) -> None:
    """One actor process: its own envs and a local copy of the weights, refreshed every rollout."""
    from rtrl.rl.envs import make_env

    torch.set_num_threads(1)
    cfg = TrainConfig(**cfg_dict)
    seed = cfg.seed * 10_007 + 1000 * k + 100 * incarnation  # a restarted actor plays new episodes
    env = make_env(cfg.env, cfg.num_envs, seed=seed)
    local = build_agent(cfg, env)
    loop = ActorLoop(env, local, cfg.unroll, k * cfg.num_envs, seed=seed)
    while not stop.is_set():
        local.load_state_dict(shared.state_dict())
        item = (k, *loop.rollout())
        while not stop.is_set():
            try:
                out_queue.put(item, timeout=0.5)
                break
            except queue_lib.Full:
                continue
    env.close()


class LocalActors:
    """K actor processes, a queue, the shared weights; dead actors are restarted."""

    def __init__(self, cfg: TrainConfig, agent: Agent) -> None:
        import torch.multiprocessing as mp

        self.ctx = mp.get_context("spawn")
        self.cfg = dataclasses.asdict(cfg)
        self.shared = build_agent(cfg, _EnvSpec.of(agent))
        self.shared.load_state_dict(agent.state_dict())
        self.shared.share_memory()
        self.queue, self.stop = self.ctx.Queue(maxsize=2 * cfg.num_actors), self.ctx.Event()
        self.procs: list = [None] * cfg.num_actors
        self.incarnation = [0] * cfg.num_actors
        self.restarts = 0
        for k in range(cfg.num_actors):
            self._spawn(k)
        self.pending: deque = deque()

    def _spawn(self, k: int) -> None:
        args = (k, self.cfg, self.shared, self.queue, self.stop, self.incarnation[k])
        self.procs[k] = self.ctx.Process(target=_actor_process, args=args, daemon=True)
        self.procs[k].start()

    def revive(self) -> None:
        """Restart every dead actor. Its streams begin new episodes: the first step of each has
        ``done = True``, which zeroes that stream's state and RTRL sensitivities in the learner."""
        for k, p in enumerate(self.procs):
            if not p.is_alive() and not self.stop.is_set():
                print(f"warning: actor {k} died (exit code {p.exitcode}); restarting it, its streams start "
                      "new episodes", file=sys.stderr, flush=True)
                self.incarnation[k] += 1
                self.restarts += 1
                self._spawn(k)

    def get(self, n: int, timeout_s: float = 120.0) -> tuple[list[Rollout], list]:
        """``n`` rollouts of distinct actors, each actor's in the order it made them."""
        batch, actors, stats, deferred = [], set(), [], deque()
        waited = 0.0
        while len(batch) < n:
            if self.pending:
                item = self.pending.popleft()
            else:
                try:
                    item = self.queue.get(timeout=1.0)
                except queue_lib.Empty:
                    self.revive()
                    waited += 1.0
                    if waited > timeout_s:
                        raise RuntimeError(f"no rollout for {timeout_s:.0f} s although every actor is alive") from None
                    continue
                except (ConnectionError, EOFError, OSError) as e:
                    # a rollout sent by an actor that died before the learner could map its shared
                    # tensors: drop it; that actor's streams restart with new episodes anyway
                    print(f"warning: dropped a rollout of a dead actor ({type(e).__name__})", file=sys.stderr)
                    continue
            k, r, ep = item
            if k in actors:
                deferred.append(item)
                continue
            actors.add(k)
            batch.append(r)
            stats += ep
        self.pending.extendleft(reversed(deferred))
        self.revive()
        return batch, stats

    def publish(self, agent: Agent) -> None:
        with torch.no_grad():
            for s, p in zip(self.shared.parameters(), agent.parameters()):
                s.copy_(p)

    def close(self) -> None:
        self.stop.set()
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()


@dataclass
class _EnvSpec:
    obs_shape: tuple
    num_actions: int

    @staticmethod
    def of(agent: Agent) -> "_EnvSpec":
        return _EnvSpec(agent.obs_shape, agent.num_actions)
