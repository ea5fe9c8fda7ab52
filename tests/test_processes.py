"""Signals that never cut an update in half: a real SIGTERM sent in the middle of an optimiser step."""

from __future__ import annotations

import os
import signal

import pytest

from rtrl.cli import main
from rtrl.runs import load_checkpoint


@pytest.mark.parametrize("algo", ["impala", "ppo"])
def test_sigterm_inside_an_update_saves_counters_that_match_the_weights(tmp_path, monkeypatch, algo):
    """A real SIGTERM, sent from inside the third optimiser step (the real step, then the signal),
    the worst moment: the weights have moved, the update's counters not yet."""
    from rtrl.rl import optim

    run = tmp_path / "run"
    ppo = ["--num-envs", "4", "--unroll", "10", "--ppo-epochs", "2", "--ppo-minibatches", "2"] if algo == "ppo" else []
    real_step, opt_steps = optim._Optimizer.step, []

    def step_then_sigterm_at_the_third(self) -> None:
        real_step(self)
        opt_steps.append(1)
        if len(opt_steps) == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(optim._Optimizer, "step", step_then_sigterm_at_the_third)
    assert main(["train", "--algo", algo, *ppo, "--total-frames", "100000", "--checkpoint-every", "1000",
                 "--eval-episodes", "0", "--run-dir", str(run), "--no-progress"]) == 130
    ckpt = load_checkpoint(run / "checkpoints/latest.pt", "ppo" if algo == "ppo" else "r2ac")
    trainer = ckpt["ppo" if algo == "ppo" else "learner"]
    updates = trainer["updates"]
    per_update, frames = (4, 40) if algo == "ppo" else (1, 160)  # optimiser steps and frames of one update
    assert updates >= 1 and len(opt_steps) == updates * per_update  # the weights saved are after `updates` updates
    assert int(trainer["optimizer"]["state"][0]["step"]) == updates * per_update
    assert trainer["optimizer"]["updates"] == updates and ckpt["counters"]["frames"] == updates * frames
