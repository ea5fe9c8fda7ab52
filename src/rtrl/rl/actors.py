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

Faults end (:class:`Faults`). An exception in an actor (its env, or the acting code) is sent to the
learner, which prints the env's own message and traceback once and restarts the actor after a
back-off (1 s, then 2 s, 4 s, ...); an actor that dies without a word (a crash in native code, the
OOM killer) or produces no rollout for ``ACTOR_TIMEOUT_S`` while the learner waits for it counts
the same. After ``actor_restarts`` restarts in a row (``--actor-restarts``; the count starts
again once a restarted actor has delivered ``HEALTHY_ROLLOUTS`` rollouts) the run stops with
:class:`ActorError`, one line; the training loop saves a checkpoint first, so ``--resume``
continues once the cause is fixed. A divergence or an observation that does not fit its space
stops the run at once: restarting cannot help there.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from multiprocessing.connection import wait
from typing import Iterator, Optional

import torch

from rtrl.rl.agent import Agent
from rtrl.rl.config import EnvSpec, TrainConfig, build_agent
from rtrl.rl.envs.base import ObservationError
from rtrl.rl.learner import DivergedError, Rollout, nan_means_diverged, zero_non_finite
from rtrl.state import RecurrentState
from rtrl.utils import copy_weights_

SLOTS_PER_ACTOR = 2
ACTOR_TIMEOUT_S = 120.0  # no rollout from an actor for this long, while the learner waits for it: a fault
BACKOFF_S = 1.0  # before a failed actor's first restart; each further one in a row: twice as long
HEALTHY_ROLLOUTS = 10  # rollouts after which a restarted actor's faults in a row are forgotten


class ActorError(RuntimeError):
    """An actor failed again and again (an exception in its env or acting code, a crash, no rollout):
    the run stops with this one line; the loop saves a checkpoint first, so it can be resumed."""


def report(e: BaseException) -> tuple[str, str, str]:
    """What an actor sends the learner about an exception: ``(kind, one line, traceback)``;
    ``kind`` is "diverged" and "observation" (the run stops at once) or "fault" (restart it)."""
    if isinstance(e, DivergedError):
        return "diverged", str(e), ""
    if isinstance(e, ObservationError):
        return "observation", str(e), ""
    line = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
    return "fault", line[:300], traceback.format_exc()


def raise_report(kind: str, line: str) -> None:
    """In the learner: stop the run for a report that restarting cannot help."""
    if kind == "diverged":
        raise DivergedError(line)
    if kind == "observation":
        raise ObservationError(line, message=line)


@contextmanager
def in_process_faults() -> Iterator[None]:
    """For envs stepped in the learner's process (``--num-actors 0``, PPO): an exception from the env
    or the acting code is printed with its traceback and becomes :class:`ActorError`, one line (there
    is no process to restart); a divergence or an observation error passes as it is."""
    try:
        yield
    except (DivergedError, ObservationError):
        raise
    except Exception as e:
        _, line, trace = report(e)
        print(f"the environment or the acting code raised an exception:\n{trace.rstrip()}", file=sys.stderr,
              flush=True)
        raise ActorError(f"the environment or the acting code raised {line}; the run stopped and its last "
                         "checkpoint is kept: fix the cause, then continue with --resume") from None


class Faults:
    """Each actor's faults in a row: a warning and a back-off before each restart (``BACKOFF_S``,
    doubling), the first fault's traceback printed once, and :class:`ActorError` once an actor has
    failed more than ``max_restarts`` times in a row."""

    def __init__(self, num_actors: int, max_restarts: int, what: str = "actor") -> None:
        self.max_restarts, self.what = max_restarts, what
        self.in_row = [0] * num_actors
        self.delivered_since = [0] * num_actors

    def failed(self, k: int, line: str, trace: str = "") -> float:
        """Count a fault of actor ``k`` (``line``: what happened; ``trace``: its traceback). Returns
        the seconds to wait before restarting it, or raises :class:`ActorError`."""
        self.in_row[k] += 1
        self.delivered_since[k] = 0
        n = self.in_row[k]
        if n == 1 and trace:  # the env's own message and traceback, once per run of faults
            print(f"{self.what} {k} raised an exception (in its environment or acting code):\n"
                  f"{trace.rstrip()}", file=sys.stderr, flush=True)
        if n > self.max_restarts:
            raise ActorError(f"{self.what} {k} failed {n} time{'s' * (n > 1)} in a row (last: {line}); "
                             "the run stopped and its last checkpoint is kept: fix the cause, then continue "
                             f"with --resume (--actor-restarts, now {self.max_restarts}, sets the restarts "
                             "allowed in a row)")
        delay = BACKOFF_S * 2 ** (n - 1)
        print(f"warning: {self.what} {k} failed ({line}); restarting it in {delay:g} s (restart {n} of "
              f"{self.max_restarts} in a row), its streams start new episodes", file=sys.stderr, flush=True)
        return delay

    def delivered(self, k: int) -> None:
        """Actor ``k`` delivered a rollout."""
        self.delivered_since[k] += 1
        if self.delivered_since[k] >= HEALTHY_ROLLOUTS:
            self.in_row[k] = 0


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
        """The next rollout of every stream (``n`` must be 1) and the episodes that ended in it. An
        exception from the env or the acting code is printed with its traceback and stops the run as
        :class:`ActorError` (the envs live in this process: there is no actor to restart)."""
        with in_process_faults():
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
    number goes back through ``filled`` with the episode statistics. An exception goes back as
    ``(None, report(e))`` (:func:`report`): after a fault the process ends (the learner restarts
    it); after a divergence or an observation error it waits for the learner to stop the run."""
    from rtrl.rl.envs import make_env

    die_with_parent(parent or os.getppid())
    torch.set_num_threads(1)
    env = None
    try:
        cfg = TrainConfig(**cfg_dict)
        seed = cfg.seed * 10_007 + 1000 * k + 100 * incarnation  # a restarted actor plays new episodes
        env = make_env(cfg.env, cfg.num_envs, seed=seed)
        local = build_agent(cfg, env)
        loop = ActorLoop(env, local, cfg.unroll, k * cfg.num_envs, seed=seed)
        while not stop.is_set():
            if not free.poll(0.1):
                continue
            slot = free.recv()
            copy_weights_(local, shared)
            with torch.no_grad():
                _, stats = loop.rollout(slots[slot])
            filled.send((slot, stats))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the learner is gone or stopping
    except Exception as e:
        kind, line, trace = report(e)
        try:
            filled.send((None, (kind, line, trace)))
            if kind != "fault":
                stop.wait()  # until the learner, which raises the error, closes the actors
        except (EOFError, BrokenPipeError, OSError, KeyboardInterrupt):
            pass
    finally:
        try:
            if env is not None:
                env.close()
        except Exception:  # a broken env may fail to close too; the process ends either way
            pass


class LocalActors:
    """K actor processes writing rollouts into shared-memory slots; failed actors are restarted, a
    bounded number of times in a row, with back-off (:class:`Faults`).

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
        self.faults = Faults(self.num_actors, cfg.actor_restarts)
        self.held: list[tuple[int, int]] = []  # (actor, slot) handed to the learner, not yet given back
        self.waiting: dict[int, list] = {k: [] for k in range(self.num_actors)}  # received, not yet taken
        self.reports: dict[int, tuple[str, str]] = {}  # an actor's last words: (line, traceback) of its fault
        self.restart_at: dict[int, float] = {}  # failed actors, down until then
        self.heard = [time.monotonic()] * self.num_actors  # when each actor last sent a rollout (or started)
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
        self.heard[k] = time.monotonic()
        held = {slot for j, slot in self.held if j == k}  # the learner may still read these
        for slot in range(SLOTS_PER_ACTOR * k, SLOTS_PER_ACTOR * (k + 1)):
            if slot not in held:
                free_w.send(slot)

    def _fail(self, k: int, line: str, trace: str = "") -> None:
        """Actor ``k`` failed: end its process (if it still runs), drop the rollouts it made, and
        schedule its restart after the back-off (or raise :class:`ActorError`, via :class:`Faults`).
        Its streams begin new episodes: the first step of each has ``done = True``, which zeroes that
        stream's state and RTRL sensitivities in the learner."""
        p = self.procs[k]
        if p.is_alive():
            p.terminate()  # SIGTERM, then SIGKILL for an env stuck in native code
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
        self.free[k].close()
        self.filled[k].close()
        self.waiting[k] = []
        self.restart_at[k] = time.monotonic() + self.faults.failed(k, line, trace)

    def _restart_due(self) -> None:
        """Start the failed actors whose back-off has passed."""
        for k, at in list(self.restart_at.items()):
            if time.monotonic() >= at and not self.stop.is_set():
                del self.restart_at[k]
                self.incarnation[k] += 1
                self.restarts += 1
                self._spawn(k)

    def _receive(self, k: int) -> None:
        """Take what actor ``k`` sent: rollouts wait to be taken; a report of a divergence or a bad
        observation stops the run; a fault report is kept until its process ends."""
        try:
            while self.filled[k].poll():
                slot, ep = self.filled[k].recv()
                if slot is not None:
                    self.waiting[k].append((slot, ep))
                    continue
                kind, line, trace = ep
                raise_report(kind, line)
                self.reports[k] = (line, trace)
        except (EOFError, OSError):
            pass  # the actor died: its sentinel says so

    def get(self, n: int, timeout_s: float = ACTOR_TIMEOUT_S) -> tuple[list[Rollout], list]:
        """``n`` rollouts of distinct actors, each actor's in the order it made them, and the
        statistics of the episodes that ended in them. Hands the previous batch's slots back first.

        An actor that ends, or sends no rollout for ``timeout_s`` while this waits for it, has failed
        (see :class:`Faults`); one that is down for its back-off is not waited for, unless ``n`` needs it."""
        for k, slot in self.held:
            try:
                self.free[k].send(slot)  # to actor k's current process, a successor if it died
            except (BrokenPipeError, OSError):
                pass  # it died since: its successor gets every slot not held
        self.held = []
        batch, stats, taken = [], [], set()
        start = time.monotonic()
        while len(batch) < n:
            for k in range(self.num_actors):
                if k not in taken and self.waiting[k] and len(batch) < n:
                    slot, ep = self.waiting[k].pop(0)
                    taken.add(k)
                    batch.append(self.slots[slot])
                    stats += ep
                    self.held.append((k, slot))
                    self.heard[k] = time.monotonic()
                    self.faults.delivered(k)
            if len(batch) == n:
                break
            self._restart_due()
            pending = [k for k in range(self.num_actors) if k not in taken and k not in self.restart_at]
            next_restart = min(self.restart_at.values(), default=math.inf) - time.monotonic()
            ready = wait([self.filled[k] for k in pending] + [self.procs[k].sentinel for k in pending],
                         timeout=max(0.0, min(1.0, next_restart)))
            for k in pending:
                if self.filled[k] in ready:
                    self._receive(k)
            now = time.monotonic()
            for k in pending:
                if self.procs[k].sentinel in ready:
                    self._receive(k)  # its last words: a fault report sent before it ended
                    ended = f"its process ended (exit code {self.procs[k].exitcode})"
                    line, trace = self.reports.pop(k, (ended, ""))
                    self._fail(k, line, trace)
                elif not self.waiting[k] and now - max(self.heard[k], start) > timeout_s:
                    self._fail(k, f"no rollout for {timeout_s:.0f} s: a hung environment?")
        return batch, stats

    def publish(self, agent: Agent) -> None:
        """Copy the learner's newest weights to where the actors read them."""
        copy_weights_(self.shared, agent)

    def close(self) -> None:
        self.stop.set()
        for k, p in enumerate(self.procs):
            self.free[k].close()
            p.join(timeout=0 if k in self.restart_at else 5)
            if p.is_alive():
                p.terminate()
        for f in self.filled:
            f.close()
