"""R2AC training: actors step environments, the learner updates, the run folder records it all.

Two ways to run the actors, same learner:

* ``num_actors = 0``: synchronous, one process (debugging, tests, tiny tasks);
* ``num_actors = K``: K actor processes (IMPALA, as torchbeast's monobeast): each steps its own
  batch of ``num_envs`` environments with batched inference on the *shared* weights, and sends
  whole rollouts through a queue; the learner updates the weights in place after every step.

Streams: actor ``k``'s environment ``i`` is stream ``k * num_envs + i``. Every rollout of an actor
covers all its streams, in time order, and the learner takes them in queue order (a batch never
holds two rollouts of one actor), so each stream's RTRL state advances in order.

``algo = "ppo"`` trains the same agent with PPO instead (:mod:`rtrl.rl.ppo`), with the same run
folder, checkpoints, resume and evaluation; :func:`train` dispatches on it.

Resuming (``resume=True``) restores the weights, optimiser, schedule, counters, RNG and the
per-stream RTRL state; environments cannot be checkpointed, so every stream starts a new episode
(``done`` is set on its first step, which zeroes its state and sensitivities, as in any episode).
"""

from __future__ import annotations

import dataclasses
import json
import math
import queue as queue_lib
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from rtrl.exact import RecurrentState
from rtrl.rl.agent import CORES, STEMS, Agent
from rtrl.rl.learner import Learner, LearnerConfig, NonFiniteError, Rollout
from rtrl.utils import ProgressBar
from rtrl.runs import Run, RunError, load_checkpoint

ALGOS = ("impala", "ppo")  # R2AC (IMPALA + V-trace) or PPO; both with any core
_CHECKPOINT_KIND = {"impala": "r2ac", "ppo": "ppo"}


@dataclass
class TrainConfig:
    algo: str = "impala"  # "impala" (R2AC: actors, V-trace) or "ppo" (synchronous, see rtrl.rl.ppo)
    env: str = "rtrl-Recall-v0"
    core: str = "rtrl-elstm"
    hidden_size: int = 64
    encoder_width: int = 64
    stem: str = "auto"  # "impala" (pixels), "nature" (pixels, cheaper), "mlp" (vectors); auto picks by obs shape
    forget_bias: float = 0.0  # eLSTM cores only
    unroll: int = 10  # M: steps per rollout; 1 = fully online R2AC
    num_envs: int = 16  # streams per actor
    num_actors: int = 0  # 0 = synchronous, in-process
    batch_rollouts: int = 1  # rollouts (of distinct actors) per learner update
    total_frames: int = 200_000  # agent steps over all streams
    optimizer: str = "rmsprop"
    lr: float = 3e-3  # the paper: 6e-4 at its scale (see PRESETS["paper"]); 3e-3 measured on our small tasks
    rms_eps: float = 0.01
    rms_alpha: float = 0.99
    grad_clip: float = 40.0
    discount: float = 0.99
    value_weight: float = 0.5
    entropy_weight: float = 0.01
    reward_clip: float = 1.0
    lr_decay: bool = True
    seed: int = 0
    checkpoint_every: int = 200  # updates
    log_every: int = 20  # updates
    eval_episodes: int = 100
    threads: int = 1  # torch threads of the learner process (0 = torch's default); small models run best on 1
    load_stem: str = ""  # a run folder or checkpoint whose stem (encoder) initialises this agent's
    freeze_stem: bool = False  # keep the stem fixed (the paper's DMLab recipe: pretrain with TBPTT, freeze)
    backend: str = "local"  # actors as local processes ("local") or Ray actors ("ray"); with num_actors >= 1
    ray_address: str = ""  # join this Ray cluster (empty: start a local Ray instance)
    # PPO only (algo = "ppo"); value_weight and entropy_weight above are PPO's vf_coef and ent_coef
    ppo_epochs: int = 4  # passes over each rollout
    ppo_minibatches: int = 4  # minibatches per epoch, split by env (must divide num_envs)
    clip_coef: float = 0.2  # the surrogate's ratio clip (and the value clip)
    clip_value: bool = True  # clip the value loss around the rollout's values (else plain squared error)
    gae_lambda: float = 0.95

    def validate(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}; choose one of {ALGOS}")
        if self.algo == "ppo":
            self._validate_ppo()
        if self.core not in CORES:
            raise ValueError(f"unknown core {self.core!r}; choose one of {CORES}")
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}; choose one of {STEMS}")
        if self.unroll < 1:
            raise ValueError(f"unroll length M must be >= 1, got {self.unroll}")
        for name in ("hidden_size", "encoder_width", "num_envs", "batch_rollouts", "total_frames",
                     "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.backend not in ("local", "ray"):
            raise ValueError(f"unknown backend {self.backend!r}; choose 'local' or 'ray'")
        if self.backend == "ray" and self.num_actors < 1:
            raise ValueError("--backend ray needs --num-actors >= 1")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = torch's default), got {self.threads}")
        if self.num_actors < 0:
            raise ValueError(f"num_actors must be >= 0 (0 = synchronous), got {self.num_actors}")
        if self.num_actors and self.batch_rollouts > self.num_actors:
            raise ValueError(f"batch_rollouts ({self.batch_rollouts}) cannot exceed num_actors ({self.num_actors}): "
                             "a batch never holds two rollouts of one actor")
        if not (self.lr >= 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a non-negative number, got {self.lr}")

    def _validate_ppo(self) -> None:
        if self.num_actors != 0:
            raise ValueError("--algo ppo runs synchronously in one process: use --num-envs for more environments "
                             f"and leave --num-actors at 0 (got {self.num_actors})")
        if self.batch_rollouts != 1:
            raise ValueError(f"--batch-rollouts is for --algo impala; PPO takes one rollout of all --num-envs "
                             f"per update (got {self.batch_rollouts})")
        for name in ("ppo_epochs", "ppo_minibatches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_envs % self.ppo_minibatches:
            raise ValueError(f"ppo_minibatches ({self.ppo_minibatches}) must divide num_envs ({self.num_envs}): "
                             "minibatches are whole environments' rollouts, of equal size")
        if not (self.clip_coef > 0 and math.isfinite(self.clip_coef)):
            raise ValueError(f"clip_coef must be a positive number, got {self.clip_coef}")
        if not 0 <= self.gae_lambda <= 1:
            raise ValueError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")

    @property
    def num_streams(self) -> int:
        return max(self.num_actors, 1) * self.num_envs

    @property
    def frames_per_update(self) -> int:
        return self.unroll * self.num_envs * self.batch_rollouts  # PPO: batch_rollouts is 1

    def learner_config(self) -> LearnerConfig:
        total = math.ceil(self.total_frames / self.frames_per_update) if self.lr_decay else 0
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(LearnerConfig) if hasattr(self, f.name)}
        return LearnerConfig(**shared, total_updates=total)


PRESETS = {
    # The README's task: exact RTRL solves it in ~50k frames (about a minute on 2 cores).
    "small": TrainConfig(),
    # PPO on the small tasks (`rtrl train --algo ppo` starts here): Adam, 16 envs in 4 minibatches of 4,
    # rollouts of 20 steps (4 Recall episodes), 4 epochs. From Python: dataclasses.replace(PRESETS["ppo"], ...).
    "ppo": TrainConfig(algo="ppo", optimizer="adam", lr=1e-3, unroll=20, num_envs=16, ppo_epochs=4,
                       ppo_minibatches=4, grad_clip=0.5, lr_decay=True, log_every=5, checkpoint_every=50),
    # The paper's R2AC hyper-parameters (its code's READMEs; DMLab/ProcGen/Atari scale).
    "paper": TrainConfig(hidden_size=512, unroll=100, num_envs=1, num_actors=32, batch_rollouts=32, lr=6e-4,
                         total_frames=100_000_000, checkpoint_every=1000, log_every=100),
}
# ProcGen Chaser, hard (the paper's Sec. 4.2): N = 256, M = 50, 200 M steps; and its memory mode.
PRESETS["procgen-chaser"] = dataclasses.replace(PRESETS["paper"], env="procgen-chaser-hard-v0", hidden_size=256,
                                                unroll=50, total_frames=200_000_000)
PRESETS["procgen-maze-memory"] = dataclasses.replace(PRESETS["procgen-chaser"], env="procgen-maze-memory-v0")
# The paper's five Atari games (its Table 2): N = 256, M = 50, 200 M steps, RMSProp 6e-4, 32 actors.
for _game in ("Breakout", "Gravitar", "MsPacman", "Qbert", "Seaquest"):
    PRESETS[f"atari-{_game}"] = dataclasses.replace(PRESETS["paper"], env=f"ALE/{_game}-v5", hidden_size=256,
                                                    unroll=50, total_frames=200_000_000, eval_episodes=30)


class RunBook:
    """The bookkeeping R2AC and PPO share: counters (frames, episodes, restarts, training wall time
    over all starts of the run), resuming them with the weights from the run's latest ``kind``
    checkpoint, frames/s between log points, and the log/checkpoint cadence.

    ``modules`` maps checkpoint keys to objects with ``state_dict``/``load_state_dict`` (the agent
    and its learner). With ``run = None`` nothing is logged or saved.
    """

    def __init__(self, cfg: TrainConfig, run: Optional[Run], resume: bool, kind: str, modules: dict) -> None:
        self.cfg, self.run, self.kind, self.modules = cfg, run, kind, modules
        self.counters = dict(frames=0, episodes=0, restarts=0, wall=0.0)
        ckpt = run.latest(kind) if run is not None and resume else None
        if ckpt is not None:
            for key, module in modules.items():
                module.load_state_dict(ckpt[key])
            torch.set_rng_state(ckpt["torch_rng"])
            self.counters.update(ckpt["counters"])
            self.counters["restarts"] += 1
        self._start = time.perf_counter() - self.counters["wall"]
        self._frames, self._t = self.counters["frames"], time.perf_counter()

    @property
    def env_seed(self) -> int:
        """Seed of the training envs: a restart plays new episodes, not the first ones again."""
        return self.cfg.seed * 10_007 + 100_003 * self.counters["restarts"]

    def fps(self) -> float:
        """Frames per second since the previous call (or since the start)."""
        now = time.perf_counter()
        fps = (self.counters["frames"] - self._frames) / max(now - self._t, 1e-9)
        self._frames, self._t = self.counters["frames"], now
        return fps

    def elapsed(self) -> float:
        """Seconds of training over all starts of the run; also stored in ``counters["wall"]``."""
        self.counters["wall"] = time.perf_counter() - self._start
        return self.counters["wall"]

    def save(self) -> None:
        """Checkpoint the modules, the RNG and the counters (atomically, by :class:`Run`)."""
        if self.run is None:
            return
        self.elapsed()
        state = {key: module.state_dict() for key, module in self.modules.items()}
        self.run.save(dict(step=self.counters["frames"], torch_rng=torch.get_rng_state(),
                           counters=dict(self.counters), **state), self.kind)

    def after_update(self, updates: int, frames: int, mean_return: float, stats: dict) -> None:
        """Count ``frames``; log and checkpoint when due (and always at the last update)."""
        self.counters["frames"] += frames
        last = self.counters["frames"] >= self.cfg.total_frames
        if self.run is not None and (updates % self.cfg.log_every == 0 or last):
            self.run.log(self.counters["frames"], mean_return=mean_return, episodes=self.counters["episodes"],
                         fps=self.fps(), updates=updates, **stats)
        if updates % self.cfg.checkpoint_every == 0 or last:
            self.save()


def build_agent(cfg: TrainConfig, env) -> Agent:
    agent = Agent(env.obs_shape, env.num_actions, cfg.core, cfg.hidden_size, cfg.encoder_width, cfg.forget_bias,
                  cfg.stem)
    if cfg.freeze_stem:
        agent.stem.requires_grad_(False)
    return agent


def start_training(cfg: TrainConfig) -> Agent:
    """What every training run does first: validate ``cfg``, set threads and the seed, build the
    agent for ``cfg.env`` and load ``cfg.load_stem`` (a resumed run then overwrites the weights
    with its own checkpoint)."""
    from rtrl.rl.envs import make_env

    cfg.validate()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    probe = make_env(cfg.env, 1, seed=cfg.seed)
    agent = build_agent(cfg, probe)
    probe.close()
    if cfg.load_stem:
        load_stem(agent, cfg.load_stem)
    return agent


def load_stem(agent: Agent, source: str | Path) -> None:
    """Copy the stem's weights from a run folder (its latest checkpoint) or a checkpoint file."""
    path = Path(source)
    if path.is_dir():
        path = path / "checkpoints" / "latest.pt"
    saved = load_checkpoint(path)
    if saved.get("kind") not in _CHECKPOINT_KIND.values():
        raise RunError(f"{path} is a {saved.get('kind')!r} checkpoint, not a trained agent's")
    saved = saved["agent"]
    stem = {k[len("stem."):]: v for k, v in saved.items() if k.startswith("stem.")}
    own = agent.stem.state_dict()
    if stem.keys() != own.keys() or any(stem[k].shape != own[k].shape for k in own):
        raise ValueError(f"the stem in {path} does not fit this agent (observations or encoder size differ)")
    agent.stem.load_state_dict(stem)


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


def _cat_rollouts(rs: list[Rollout]) -> Rollout:
    if len(rs) == 1:
        return rs[0]
    state = RecurrentState(torch.cat([r.state.c for r in rs], 0))
    return Rollout(*(torch.cat([getattr(r, f) for r in rs], 1) for f in ("obs", "reward", "done", "action", "logits")),
                   streams=torch.cat([r.streams for r in rs]), state=state)


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


class _AsyncActors:
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


_MAY_CHANGE = ("total_frames", "threads", "eval_episodes", "log_every", "checkpoint_every", "backend", "ray_address")


def open_run(cfg: TrainConfig, run_dir: Optional[str | Path], resume: bool) -> Optional[Run]:
    """The run folder (None without ``run_dir``). A resumed run's config must match, except the
    budget-like keys, and options added to ``TrainConfig`` after the run started, left at default."""
    if not run_dir:
        return None
    return Run(run_dir, dataclasses.asdict(cfg), resume=resume, may_change=_MAY_CHANGE,
               defaults=dataclasses.asdict(TrainConfig()))


def finish_run(run: Optional[Run], cfg: TrainConfig, result: dict) -> dict:
    """Evaluate the last checkpoint, write ``result.json`` and the curve, close the run."""
    if run is not None:
        if cfg.eval_episodes > 0:
            result["eval"] = evaluate_run(run.path, cfg.eval_episodes)
        (run.path / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        from rtrl.rl.plot import plot_runs

        plot_runs([run.path], run.path / "curve.png")
        run.close()
    return result


def train(cfg: TrainConfig, run_dir: Optional[str | Path] = None, resume: bool = False,
          progress: bool = True) -> dict:
    """Train an agent with R2AC (``cfg.algo == "impala"``) or PPO (``"ppo"``); returns the final
    statistics (also in ``run_dir``)."""
    from rtrl.rl.envs import make_env

    cfg.validate()
    if cfg.algo == "ppo":
        from rtrl.rl.ppo import train_ppo

        return train_ppo(cfg, run_dir, resume, progress)
    agent = start_training(cfg)
    learner = Learner(agent, cfg.learner_config(), cfg.num_streams)
    run = open_run(cfg, run_dir, resume)
    book = RunBook(cfg, run, resume, "r2ac", dict(agent=agent, learner=learner))
    counters, env_seed = book.counters, book.env_seed
    if cfg.num_actors == 0:
        env = make_env(cfg.env, cfg.num_envs, seed=env_seed)
        actor = ActorLoop(env, agent, cfg.unroll, 0, env_seed)
        actors = None
    else:
        actor_cfg = dataclasses.replace(cfg, seed=cfg.seed + counters["restarts"])
        if cfg.backend == "ray":
            from rtrl.rl.ray_actors import RayActors

            actors = RayActors(actor_cfg, agent)
        else:
            actors = _AsyncActors(actor_cfg, agent)

    returns: deque = deque(maxlen=100)
    bar = ProgressBar(cfg.total_frames, counters["frames"], progress, unit="frame")

    try:
        while counters["frames"] < cfg.total_frames:
            if actors is None:
                with torch.no_grad():
                    r, ep = actor.rollout()
                rs = [r]
            else:
                rs, ep = actors.get(cfg.batch_rollouts)
            returns.extend(ret for ret, _ in ep)
            counters["episodes"] += len(ep)
            rollout = _cat_rollouts(rs)
            try:
                stats = learner.update(rollout)
            except NonFiniteError as e:
                print(f"warning: {e}", file=sys.stderr, flush=True)
                if learner.skipped > 100:
                    raise
                continue
            if actors is not None:
                actors.publish(agent)
            frames = rollout.length * rollout.streams.numel()
            mean_ret = float(np.mean(returns)) if returns else float("nan")
            book.after_update(learner.updates, frames, mean_ret, stats)
            bar.update(frames, ret=mean_ret, upd=learner.updates)
    except KeyboardInterrupt:
        book.save()  # Ctrl-C loses nothing: the state after the last finished update
        raise
    finally:
        bar.close()
        if actors is not None:
            actors.close()
        else:
            env.close()
    result = dict(env=cfg.env, core=cfg.core, unroll=cfg.unroll, seed=cfg.seed, frames=counters["frames"],
                  updates=learner.updates, skipped_updates=learner.skipped,
                  actor_restarts=actors.restarts if actors is not None else 0,
                  train_mean_return_last100=float(np.mean(returns)) if returns else None,
                  wall_s=round(book.elapsed(), 1))
    return finish_run(run, cfg, result)


@torch.no_grad()
def evaluate(agent: Agent, env_name: str, episodes: int, seed: int, greedy: bool, num_envs: int = 16) -> list[float]:
    """Returns of the first ``episodes`` episodes, the core's state carried through each episode."""
    from rtrl.rl.envs import make_env

    env = make_env(env_name, min(num_envs, episodes), seed=seed, evaluation=True)  # Atari: whole games
    loop = ActorLoop(env, agent, 1, 0, seed)
    returns: list[float] = []
    while len(returns) < episodes:
        a, _, loop.state = agent.act(loop.obs, loop.reward, loop.done, loop.state, greedy=greedy)
        o, r, d = env.step(a.numpy())
        loop.obs, loop.reward, loop.done = torch.as_tensor(o), torch.as_tensor(r, dtype=torch.float32), torch.as_tensor(d)
        returns += [ret for ret, _ in env.pop_episode_stats()]
    env.close()
    return returns[:episodes]


HELD_OUT_SEED = 1_000_003  # evaluation seeds never used in training (training seeds are < 10^6 apart)


def evaluate_run(run_dir: str | Path, episodes: int = 100, checkpoint: str = "latest") -> dict:
    """Greedy and sampled returns of a run's checkpoint on held-out environment seeds."""
    from rtrl.rl.envs import make_env

    run_dir = Path(run_dir)
    cfg_file = run_dir / "config.json"
    if not cfg_file.is_file():
        raise RunError(f"{run_dir} is not an R2AC or PPO run folder (no config.json)")
    cfg = TrainConfig(**json.loads(cfg_file.read_text()))
    ckpt = load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.pt", _CHECKPOINT_KIND.get(cfg.algo))
    probe = make_env(cfg.env, 1, seed=0)
    agent = build_agent(cfg, probe)
    probe.close()
    agent.load_state_dict(ckpt["agent"])
    out = dict(checkpoint=checkpoint, frames=ckpt["step"], episodes=episodes, seed=HELD_OUT_SEED)
    for mode in ("greedy", "sampled"):
        torch.manual_seed(HELD_OUT_SEED)
        rets = evaluate(agent, cfg.env, episodes, HELD_OUT_SEED, greedy=mode == "greedy")
        out[mode] = dict(mean=float(np.mean(rets)), std=float(np.std(rets)))
    (run_dir / "eval.json").write_text(json.dumps(out, indent=2) + "\n")
    return out
