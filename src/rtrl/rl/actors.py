"""Actors: step environments with the behaviour policy and cut rollouts for the learner.

``ActorLoop`` steps one ``VecEnv`` in the calling process. ``LocalActors`` runs ``K`` of them in
actor processes (IMPALA, as torchbeast's monobeast): each steps its own batch of ``num_envs``
environments with batched inference on a CPU copy of the weights, refreshed from shared memory
before every rollout, and writes whole rollouts into rollout slots in shared memory; only slot
numbers travel between the processes. Streams: actor ``k``'s environment ``i`` is stream
``k * num_envs + i``. Every rollout of an actor covers all its streams, in time order, and a
batch never holds two rollouts of one actor, so each stream's RTRL state advances in order in
the learner.

Each actor owns ``SLOTS_PER_ACTOR`` slots: it fills one while the learner learns from the other,
so acting and learning overlap on two cores. Each actor talks to the learner through its own
two pipes (free slots in, filled slots out), so an actor that dies mid-message harms no other;
the learner watches every actor's process sentinel and restarts the dead.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import wait
from typing import Optional

import torch

from rtrl.rl.agent import Agent
from rtrl.rl.config import EnvSpec, TrainConfig, build_agent
from rtrl.rl.learner import DivergedError, Rollout, nan_means_diverged, zero_non_finite
from rtrl.state import RecurrentState
from rtrl.utils import copy_weights_

SLOTS_PER_ACTOR = 2


def action_buffer(agent_or_spec, M: int, B: int, alloc=torch.zeros) -> torch.Tensor:
    """``(M, B)`` int64 for discrete actions, ``(M, B, A)`` float32 for continuous ones."""
    if getattr(agent_or_spec, "continuous", False):
        return alloc(M, B, agent_or_spec.num_actions)
    return alloc(M, B, dtype=torch.long)


class ActorLoop:
    """Steps one ``VecEnv`` with an agent's behaviour policy and cuts rollouts of ``unroll`` steps."""

    def __init__(self, env, agent: Agent, unroll: int, first_stream: int, seed: int) -> None:
        self.env, self.agent, self.unroll = env, agent, unroll
        B = env.num_envs
        self.streams = torch.arange(first_stream, first_stream + B)
        self.obs = torch.as_tensor(env.reset(seed))
        self.reward = torch.zeros(B)
        self.done = torch.ones(B, dtype=torch.bool)  # the first observation starts an episode
        self.truncated, self.final_value = torch.zeros(B, dtype=torch.bool), torch.zeros(B)
        self.state = agent.initial_state(B, learner=False)

    def empty_rollout(self) -> Rollout:
        """A rollout of this loop's shapes, uninitialised (the place :meth:`rollout` writes to)."""
        M, B = self.unroll, self.env.num_envs
        return Rollout(obs=torch.empty(M + 1, *self.obs.shape, dtype=self.obs.dtype),
                       reward=torch.empty(M + 1, B), done=torch.empty(M + 1, B, dtype=torch.bool),
                       action=action_buffer(self.agent, M, B, torch.empty),
                       logits=torch.empty(M, B, self.agent.param_size),
                       streams=self.streams.clone(), state=RecurrentState(torch.empty_like(self.state.c)),
                       truncated=torch.empty(M + 1, B, dtype=torch.bool), final_value=torch.empty(M + 1, B))

    def step_env(self, action: torch.Tensor) -> None:
        """Step the envs; keep the next obs, reward, done and, where a time limit cut an episode, the
        value of its final observation under the state carried on from it (before the reset)."""
        o, rew, d = self.env.step(action.numpy())
        self.obs, self.reward, self.done = torch.as_tensor(o), torch.as_tensor(rew, dtype=torch.float32), torch.as_tensor(d)
        self.truncated = torch.as_tensor(self.env.truncated)
        self.final_value = torch.zeros(len(d))
        if self.env.final_obs is not None:
            rows = torch.as_tensor(self.env.truncated.nonzero()[0])
            final = zero_non_finite(torch.as_tensor(self.env.final_obs[rows.numpy()]))
            self.final_value[rows] = self.agent.final_value(final, zero_non_finite(self.reward[rows]),
                                                            self.state.map(lambda t: t[rows])).float()

    def rollout(self, out: Optional[Rollout] = None) -> tuple[Rollout, list[tuple[float, int]]]:
        """The next ``unroll`` steps of every env, written into ``out`` (e.g. a shared-memory slot) or a
        new rollout; also the (return, length) of every episode that ended in them."""
        r = out if out is not None else self.empty_rollout()
        r.state.c.copy_(self.state.c)
        r.streams.copy_(self.streams)
        for t in range(self.unroll + 1):
            r.obs[t], r.reward[t], r.done[t] = self.obs, self.reward, self.done
            if r.truncated is not None:
                r.truncated[t], r.final_value[t] = self.truncated, self.final_value
            if t == self.unroll:
                break
            with nan_means_diverged():  # a faulty env's NaN is acted on as 0, kept in the rollout for the learner
                action, logits, self.state = self.agent.act(zero_non_finite(self.obs), zero_non_finite(self.reward),
                                                            self.done, self.state)
            r.action[t], r.logits[t] = action, logits
            self.step_env(action)
        return r, self.env.pop_episode_stats()


class InProcessActor:
    """The synchronous backend (``num_actors = 0``): one :class:`ActorLoop` in the learner's process,
    acting with the learner's agent, or with a CPU copy of it when the learner is on a GPU."""

    restarts = 0

    def __init__(self, cfg: TrainConfig, agent: Agent, spec: EnvSpec, seed: int) -> None:
        from rtrl.rl.envs import make_env

        self.env = make_env(cfg.env, cfg.num_envs, seed=seed)
        self.agent = agent
        if agent.policy.weight.device.type != "cpu":
            self.agent = build_agent(cfg, spec)
            copy_weights_(self.agent, agent)
        self.loop = ActorLoop(self.env, self.agent, cfg.unroll, 0, seed)

    def get(self, n: int = 1) -> tuple[list[Rollout], list]:
        """The next rollout of every stream (``n`` must be 1) and the episodes that ended in it."""
        with torch.no_grad():
            r, stats = self.loop.rollout()
        return [r], stats

    def publish(self, agent: Agent) -> None:
        if self.agent is not agent:
            copy_weights_(self.agent, agent)

    def close(self) -> None:
        self.env.close()


def die_with_parent(parent: int) -> None:
    """End this process when ``parent`` dies, by any signal, ``kill -9`` included: on Linux the
    kernel sends SIGKILL (``PR_SET_PDEATHSIG``, fired when the thread that started us ends: the
    learner's main thread); everywhere a watchdog thread also checks every second whether we were
    handed to a new parent, which also covers a parent that died before the ``prctl``. (An actor's
    pipes cannot tell: a forked actor holds copies of the learner's ends.)"""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _actor_process(k: int, cfg_dict: dict, shared: Agent, slots: list[Rollout], free, filled, stop,
                   incarnation: int = 0, parent: int = 0) -> None:
    """One actor process: its own envs and a local copy of the weights, refreshed every rollout.

    ``free`` brings the numbers of its slots that the learner has finished with; each filled slot's
    number goes back through ``filled`` with the episode statistics (``(None, message)`` if the
    weights diverged: the learner stops the run, restarting this actor would not help)."""
    from rtrl.rl.envs import make_env

    die_with_parent(parent or os.getppid())
    torch.set_num_threads(1)
    cfg = TrainConfig(**cfg_dict)
    seed = cfg.seed * 10_007 + 1000 * k + 100 * incarnation  # a restarted actor plays new episodes
    env = make_env(cfg.env, cfg.num_envs, seed=seed)
    local = build_agent(cfg, env)
    loop = ActorLoop(env, local, cfg.unroll, k * cfg.num_envs, seed=seed)
    try:
        while not stop.is_set():
            if not free.poll(0.1):
                continue
            slot = free.recv()
            copy_weights_(local, shared)
            try:
                with torch.no_grad():
                    _, stats = loop.rollout(slots[slot])
            except DivergedError as e:
                filled.send((None, str(e)))
                stop.wait()  # until the learner, which raises the error, closes the actors
                break
            filled.send((slot, stats))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the learner is gone or stopping
    finally:
        env.close()


class LocalActors:
    """K actor processes writing rollouts into shared-memory slots; dead actors are restarted.

    ``get(n)`` returns ``n`` rollouts of distinct actors, each actor's in the order it made them, as
    views of the shared slots: they stay valid until the next ``get`` (which hands those slots
    back to their actors) or ``close``.
    """

    def __init__(self, cfg: TrainConfig, agent: Agent, spec: EnvSpec) -> None:
        import torch.multiprocessing as mp

        from rtrl.rl.envs import fork_safe

        # fork starts an actor in milliseconds (spawn re-imports torch: ~1.5 s a process); actors never
        # touch CUDA, so a learner on a GPU is no obstacle; envs with native state need spawn
        fork = fork_safe(cfg.env) and "fork" in mp.get_all_start_methods()
        self.ctx = mp.get_context("fork" if fork else "spawn")
        self.cfg = dataclasses.asdict(cfg)
        self.num_actors = cfg.num_actors
        self.shared = build_agent(cfg, spec)
        copy_weights_(self.shared, agent)
        self.shared.share_memory()
        M, B = cfg.unroll, cfg.num_envs
        c = self.shared.initial_state(B, learner=False).c
        self.slots = [Rollout(obs=torch.zeros(M + 1, B, *spec.obs_shape, dtype=spec.obs_dtype),
                              reward=torch.zeros(M + 1, B), done=torch.zeros(M + 1, B, dtype=torch.bool),
                              action=action_buffer(agent, M, B), logits=torch.zeros(M, B, agent.param_size),
                              streams=torch.zeros(B, dtype=torch.long),
                              state=RecurrentState(torch.zeros_like(c)),
                              truncated=torch.zeros(M + 1, B, dtype=torch.bool), final_value=torch.zeros(M + 1, B))
                      for _ in range(SLOTS_PER_ACTOR * self.num_actors)]
        for r in self.slots:
            for t in (r.obs, r.reward, r.done, r.action, r.logits, r.streams, r.state.c, r.truncated, r.final_value):
                t.share_memory_()
        self.stop = self.ctx.Event()
        self.procs: list = [None] * self.num_actors
        self.free: list = [None] * self.num_actors  # learner's end of each actor's free-slot pipe
        self.filled: list = [None] * self.num_actors  # learner's end of each actor's filled-slot pipe
        self.incarnation = [0] * self.num_actors
        self.restarts = 0
        self.held: list[tuple[int, int]] = []  # (actor, slot) handed to the learner, not yet given back
        self.waiting: dict[int, list] = {k: [] for k in range(self.num_actors)}  # received, not yet taken
        for k in range(self.num_actors):
            self._spawn(k)

    def _spawn(self, k: int) -> None:
        free_r, free_w = self.ctx.Pipe(duplex=False)
        filled_r, filled_w = self.ctx.Pipe(duplex=False)
        args = (k, self.cfg, self.shared, self.slots, free_r, filled_w, self.stop, self.incarnation[k], os.getpid())
        self.procs[k] = self.ctx.Process(target=_actor_process, args=args, daemon=True)
        self.procs[k].start()
        free_r.close()
        filled_w.close()
        self.free[k], self.filled[k], self.waiting[k] = free_w, filled_r, []
        held = {slot for j, slot in self.held if j == k}  # the learner may still read these
        for slot in range(SLOTS_PER_ACTOR * k, SLOTS_PER_ACTOR * (k + 1)):
            if slot not in held:
                free_w.send(slot)

    def revive(self) -> None:
        """Restart every dead actor. Its streams begin new episodes: the first step of each has
        ``done = True``, which zeroes that stream's state and RTRL sensitivities in the learner.
        The rollouts it made before dying are dropped, and its slots given to the new process."""
        for k, p in enumerate(self.procs):
            if not p.is_alive() and not self.stop.is_set():
                print(f"warning: actor {k} died (exit code {p.exitcode}); restarting it, its streams start "
                      "new episodes", file=sys.stderr, flush=True)
                self.free[k].close()
                self.filled[k].close()
                self.incarnation[k] += 1
                self.restarts += 1
                self._spawn(k)

    def _receive(self, k: int) -> None:
        try:
            while self.filled[k].poll():
                self.waiting[k].append(self.filled[k].recv())
        except (EOFError, OSError):
            pass  # the actor died; revive() restarts it

    def get(self, n: int, timeout_s: float = 120.0) -> tuple[list[Rollout], list]:
        """``n`` rollouts of distinct actors, each actor's in the order it made them, and the
        statistics of the episodes that ended in them. Hands the previous batch's slots back first."""
        for k, slot in self.held:
            try:
                self.free[k].send(slot)  # to actor k's current process, a successor if it died
            except (BrokenPipeError, OSError):
                pass  # it died since: its successor gets every slot not held
        self.held = []
        batch, stats, taken = [], [], set()
        deadline = time.monotonic() + timeout_s
        while len(batch) < n:
            for k in range(self.num_actors):
                if k not in taken and self.waiting[k] and len(batch) < n:
                    slot, ep = self.waiting[k].pop(0)
                    if slot is None:  # the actor found the weights diverged; ``ep`` says so
                        raise DivergedError(ep)
                    taken.add(k)
                    batch.append(self.slots[slot])
                    stats += ep
                    self.held.append((k, slot))
            if len(batch) == n:
                break
            pending = [k for k in range(self.num_actors) if k not in taken]
            ready = wait([self.filled[k] for k in pending] + [self.procs[k].sentinel for k in pending], timeout=1.0)
            for k in pending:
                if self.filled[k] in ready:
                    self._receive(k)
            if any(self.procs[k].sentinel in ready for k in pending):
                self.revive()
            if not ready and time.monotonic() > deadline:
                raise RuntimeError(f"no rollout for {timeout_s:.0f} s although every actor is alive")
        return batch, stats

    def publish(self, agent: Agent) -> None:
        """Copy the learner's newest weights to where the actors read them."""
        copy_weights_(self.shared, agent)

    def close(self) -> None:
        self.stop.set()
        for k, p in enumerate(self.procs):
            self.free[k].close()
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        for f in self.filled:
            f.close()
