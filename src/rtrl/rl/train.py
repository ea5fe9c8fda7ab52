"""``train``: R2AC (``algo = "impala"``, :mod:`rtrl.rl.impala`), PPO (``"ppo"``, :mod:`rtrl.rl.ppo`) or
stream AC(λ) (``"stream-ac"``, :mod:`rtrl.rl.stream`),
the same agent, run folder, checkpoints, resume and evaluation either way.

This module only chooses; the names users import from it (``TrainConfig``, ``PRESETS``,
``evaluate_run``, ...) live on the floors below and are re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rtrl.rl.actors import ActorLoop
from rtrl.rl.config import ALGOS, PRESETS, TrainConfig, build_agent
from rtrl.rl.runbook import HELD_OUT_SEED, RunBook, evaluate, evaluate_run, load_stem, start_training

__all__ = ["ALGOS", "PRESETS", "TrainConfig", "ActorLoop", "HELD_OUT_SEED", "RunBook", "build_agent", "evaluate",
           "evaluate_run", "load_stem", "start_training", "train"]


def train(cfg: TrainConfig, run_dir: Optional[str | Path] = None, resume: bool = False,
          progress: bool = True) -> dict:
    """Train an agent with R2AC (``cfg.algo == "impala"``) or PPO (``"ppo"``); returns the final
    statistics (also in ``run_dir``)."""
    cfg = cfg.resolved()
    cfg.validate()
    if cfg.algo == "ppo":
        from rtrl.rl.ppo import train_ppo

        return train_ppo(cfg, run_dir, resume, progress)
    if cfg.algo in ("stream-ac", "stream-q"):
        from rtrl.rl.stream_train import train_stream

        return train_stream(cfg, run_dir, resume, progress)
    from rtrl.rl.impala import train_impala

    return train_impala(cfg, run_dir, resume, progress)
