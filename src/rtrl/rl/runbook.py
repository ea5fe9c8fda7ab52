"""The bookkeeping every training loop shares: the run folder (open, resume, finish), the counters
and their checkpoint cadence (``RunBook``), the first steps of a run (``start_training``), and the
evaluation of a saved agent on held-out seeds. R2AC (:mod:`rtrl.rl.impala`) and PPO
(:mod:`rtrl.rl.ppo`) both stand on this floor."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from rtrl.rl.actors import ActorLoop
from rtrl.rl.agent import Agent
from rtrl.rl.config import CHECKPOINT_KIND, MAY_CHANGE, EnvSpec, TrainConfig, build_agent
from rtrl.runs import Run, RunError, load_checkpoint, load_newest, rng_state, set_rng_state


class RunBook:
    """The bookkeeping R2AC and PPO share: counters (frames, episodes, restarts, training wall time
    over all starts of the run), resuming them with the weights from the run's latest ``kind``
    checkpoint, frames/s between log points, and the log/checkpoint cadence.

    ``modules`` maps checkpoint keys to objects with ``state_dict``/``load_state_dict`` (the agent
    and its learner). With ``run = None`` nothing is logged or saved.

    A checkpoint whose mean training return (over the last 100 episodes) beats every earlier
    checkpoint's is also written as ``best.pt`` (``counters["best_return"]`` holds that return).
    """

    def __init__(self, cfg: TrainConfig, run: Optional[Run], resume: bool, kind: str, modules: dict) -> None:
        self.cfg, self.run, self.kind, self.modules = cfg, run, kind, modules
        self.counters = dict(frames=0, episodes=0, restarts=0, wall=0.0, best_return=-math.inf)
        self._mean_return = math.nan
        try:
            ckpt = run.latest(kind) if run is not None and resume else None
            if ckpt is not None:
                for key, module in modules.items():
                    module.load_state_dict(ckpt[key])
                set_rng_state(ckpt)  # the CPU's and, where the run used CUDA, the devices'
                self.counters.update(ckpt["counters"])
                self.counters["restarts"] += 1
        except BaseException:
            if run is not None:
                run.close()  # free the run folder now: the caller never gets the chance
            raise
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
        best = self._mean_return > self.counters["best_return"]  # NaN (no episode yet) is never the best
        if best:
            self.counters["best_return"] = self._mean_return
        state = {key: module.state_dict() for key, module in self.modules.items()}
        self.run.save(dict(step=self.counters["frames"], **rng_state(),
                           counters=dict(self.counters), **state), self.kind, best=best)

    def after_update(self, updates: int, frames: int, mean_return: float, stats: dict) -> None:
        """Count ``frames``; log and checkpoint when due (and always at the last update)."""
        self.counters["frames"] += frames
        self._mean_return = mean_return
        last = self.counters["frames"] >= self.cfg.total_frames
        if self.run is not None and (updates % self.cfg.log_every == 0 or last):
            self.run.log(self.counters["frames"], mean_return=mean_return, episodes=self.counters["episodes"],
                         fps=self.fps(), updates=updates, **stats)
        if updates % self.cfg.checkpoint_every == 0 or last:
            self.save()


def start_training(cfg: TrainConfig) -> tuple[Agent, EnvSpec]:
    """What every training run does first: validate ``cfg``, set threads and the seed, build the
    agent for ``cfg.env`` (on the CPU) and load ``cfg.load_stem`` (a resumed run then overwrites the
    weights with its own checkpoint). Returns the agent and the environment's spec."""
    from rtrl.rl.envs import make_env

    cfg.validate()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    probe = make_env(cfg.env, 1, seed=cfg.seed)
    spec = EnvSpec.of(probe)
    probe.close()
    check_memory(cfg, spec)
    agent = build_agent(cfg, spec)
    if cfg.load_stem:
        load_stem(agent, cfg.load_stem)
    return agent, spec


def check_memory(cfg: TrainConfig, spec: EnvSpec) -> None:
    """Refuse, with the figure, sizes whose training memory exceeds what the learner's device has free
    (:mod:`rtrl.budget`): the learner's weights, gradients and optimiser state, every stream's banked
    state and sensitivities, and a copy of the weights per actor and one shared."""
    from rtrl.budget import check_fits, training_bytes
    from rtrl.utils import resolve_device

    need = training_bytes(lambda: build_agent(cfg, spec),
                          lambda a: a.initial_state(cfg.num_streams, learner=True),
                          weight_copies=max(cfg.num_actors, 0) + 1)
    check_fits(need, resolve_device(cfg.device), f"--hidden-size {cfg.hidden_size} with --encoder-width "
               f"{cfg.encoder_width} and {cfg.num_streams} streams ({cfg.core})",
               "choose a smaller --hidden-size, --encoder-width or --num-envs")


def load_stem(agent: Agent, source: str | Path) -> None:
    """Copy the stem's weights from a run folder (its latest checkpoint) or a checkpoint file."""
    path = Path(source)
    saved = load_newest(path / "checkpoints") if path.is_dir() else load_checkpoint(path)
    if saved.get("kind") not in CHECKPOINT_KIND.values():
        raise RunError(f"{path} is a {saved.get('kind')!r} checkpoint, not a trained agent's")
    saved = saved["agent"]
    stem = {k[len("stem."):]: v for k, v in saved.items() if k.startswith("stem.")}
    own = agent.stem.state_dict()
    if stem.keys() != own.keys() or any(stem[k].shape != own[k].shape for k in own):
        raise ValueError(f"the stem in {path} does not fit this agent (observations or encoder size differ)")
    agent.stem.load_state_dict(stem)


def open_run(cfg: TrainConfig, run_dir: Optional[str | Path], resume: bool,
             spec: Optional[EnvSpec] = None) -> Optional[Run]:
    """The run folder (None without ``run_dir``). A resumed run's config must match, except the
    budget-like keys, and options added to ``TrainConfig`` after the run started, left at default.
    ``spec`` is written to ``env_spec.json``: what ``load_agent`` needs without making the env."""
    if not run_dir:
        return None
    run = Run(run_dir, dataclasses.asdict(cfg), resume=resume, may_change=MAY_CHANGE,
              defaults=dataclasses.asdict(TrainConfig()))
    if spec is not None:
        (run.path / "env_spec.json").write_text(json.dumps(spec.to_json(), indent=2) + "\n")
    return run


def finish_run(run: Optional[Run], cfg: TrainConfig, result: dict) -> dict:
    """Evaluate the last checkpoint, write ``result.json`` and the curve, close the run."""
    if run is not None:
        from rtrl.rl.plot import start_plot

        plotter = start_plot([run.path], run.path / "curve.png")  # from metrics.csv, while we evaluate
        if cfg.eval_episodes > 0:
            result["eval"] = evaluate_run(run.path, cfg.eval_episodes)
        (run.path / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        drawn = plotter.wait() == 0
        if not drawn:
            print(f"warning: could not draw {run.path / 'curve.png'} (see the error above)", file=sys.stderr)
        run.close()
        ends = [f"learning curve: {run.path / 'curve.png'}"] if drawn else []
        if "eval" in result:
            ends.append(f"evaluation on held-out seeds: {run.path / 'eval.json'} (greedy {result['eval']['greedy']['mean']:.3g},"
                        f" sampled {result['eval']['sampled']['mean']:.3g})")
        print("\n".join(ends), file=sys.stderr)
    if result.get("train_mean_return_last100") is None:
        steps = result.get("frames", 0) // max(cfg.num_streams, 1)
        print(f"warning: no training episode finished in {result.get('frames', 0)} frames ({cfg.num_streams} envs, "
              f"{steps} steps each), so the mean return is undefined and nothing could be learned from a return: "
              "raise --total-frames or lower --num-envs until each env runs whole episodes", file=sys.stderr)
    return result


@torch.no_grad()
def evaluate(agent: Agent, env_name: str, episodes: int, seed: int, greedy: bool, num_envs: int = 64) -> list[float]:
    """Returns of ``episodes`` episodes on ``min(num_envs, episodes)`` envs (env ``i`` seeded with
    ``seed + i``), the core's state carried through each episode and reset between them.

    Each env plays a fixed share of the episodes (its first ones), so short episodes are not
    over-counted, as they would be by taking whichever episodes end first."""
    from rtrl.rl.envs import make_env

    env = make_env(env_name, min(num_envs, episodes), seed=seed, evaluation=True)  # Atari: whole games
    n = min(env.num_envs, episodes)  # an env object of the Python API keeps its own size
    quota = [episodes // n + (i < episodes % n) for i in range(n)] + [0] * (env.num_envs - n)
    loop = ActorLoop(env, agent, 1, 0, seed)
    returns: list[list[float]] = [[] for _ in range(env.num_envs)]
    while any(len(r) < q for r, q in zip(returns, quota)):
        a, _, loop.state = agent.act(loop.obs, loop.reward, loop.done, loop.state, greedy=greedy)
        o, r, d = env.step(a.numpy())
        loop.obs, loop.reward, loop.done = torch.as_tensor(o), torch.as_tensor(r, dtype=torch.float32), torch.as_tensor(d)
        # an evaluation env's episodes end exactly where done is set, reported in env order
        for i, (ret, _) in zip(np.flatnonzero(d), env.pop_episode_stats()):
            if len(returns[i]) < quota[i]:
                returns[i].append(ret)
    env.close()
    return [ret for r in returns for ret in r]


HELD_OUT_SEED = 1_000_003  # evaluation seeds never used in training (training seeds are < 10^6 apart)


def evaluate_run(run_dir: str | Path, episodes: int = 100, checkpoint: str = "latest") -> dict:
    """Greedy and sampled returns of a run's checkpoint on held-out environment seeds."""
    from rtrl.rl.envs import make_env

    run_dir = Path(run_dir)
    cfg_file = run_dir / "config.json"
    if not cfg_file.is_file():
        raise RunError(f"{run_dir} is not a run folder (no config.json)")
    cfg = TrainConfig(**json.loads(cfg_file.read_text()))
    kind, best = CHECKPOINT_KIND.get(cfg.algo), run_dir / "checkpoints" / "best.pt"
    if checkpoint == "best" and not best.is_file():
        raise RunError(f"{run_dir} has no best checkpoint: a run writes checkpoints/best.pt at a checkpoint whose mean "
                       "training return beats every earlier one's (not before an episode has ended, nor in runs of "
                       "older versions); use --checkpoint latest")
    ckpt = load_checkpoint(best, kind) if checkpoint == "best" else load_newest(run_dir / "checkpoints", kind)
    probe = make_env(cfg.env, 1, seed=0)
    agent = build_agent(cfg, probe)
    probe.close()
    agent.load_state_dict(ckpt["agent"])
    out = dict(checkpoint=checkpoint, frames=ckpt["step"], episodes=episodes, seed=HELD_OUT_SEED)
    for mode in ("greedy", "sampled"):
        torch.manual_seed(HELD_OUT_SEED)
        rets = evaluate(agent, cfg.env, episodes, HELD_OUT_SEED, greedy=mode == "greedy")
        out[mode] = dict(mean=float(np.mean(rets)), std=float(np.std(rets)))
    (run_dir / ("eval.json" if checkpoint == "latest" else f"eval-{checkpoint}.json")).write_text(
        json.dumps(out, indent=2) + "\n")
    return out
