"""R2AC end to end: real environments, real training, run folders, resume, actor processes."""

from __future__ import annotations

import json

import pytest
import torch

from rtrl.cli import main
from rtrl.rl.train import TrainConfig, evaluate_run, train
from rtrl.runs import RunError

# Recall (delay 3): the cue must be remembered for 4 steps. A memoryless policy's expected return
# is 0; a perfect one gets 1. Measured: with the defaults (256 streams, an actor process beside the
# learner) the RTRL core reaches 1.0 greedy in 200k frames, ~5 s on 2 cores.
DEFAULTS = dict(env="rtrl-Recall-v0", total_frames=200_000, eval_episodes=50, checkpoint_every=50)
# The small synchronous setting the other tests count in: 16 streams x 10 steps = 160 frames an update.
SMALL = dict(env="rtrl-Recall-v0", num_envs=16, num_actors=0, total_frames=30_000, eval_episodes=50, log_every=10,
             checkpoint_every=50)
SYNC_CLI = ["--preset", "small", "--num-envs", "16", "--num-actors", "0"]  # R2AC as the README ran it


def test_rtrl_core_learns_to_remember_where_feedforward_cannot(tmp_path):
    rtrl = train(TrainConfig(core="rtrl-elstm", **DEFAULTS), tmp_path / "rtrl", progress=False)
    ff = train(TrainConfig(core="none", **DEFAULTS), tmp_path / "ff", progress=False)
    assert rtrl["eval"]["greedy"]["mean"] > 0.8, rtrl
    assert ff["eval"]["greedy"]["mean"] < 0.4, ff  # guessing: 0 in expectation
    for name in ("config.json", "metrics.csv", "result.json", "eval.json", "curve.png", "checkpoints/latest.pt"):
        assert (tmp_path / "rtrl" / name).is_file(), name


def test_resume_continues_updates_and_frames(tmp_path):
    cfg = TrainConfig(core="rtrl-elstm", **dict(SMALL, total_frames=3200, eval_episodes=0))
    first = train(cfg, tmp_path / "run", progress=False)
    assert first["updates"] == 20
    with pytest.raises(RunError, match="--resume"):
        train(cfg, tmp_path / "run", progress=False)
    second = train(TrainConfig(**{**cfg.__dict__, "total_frames": 6400}), tmp_path / "run", resume=True,
                   progress=False)
    assert second["updates"] == 40 and second["frames"] == 6400
    steps = [int(line.split(",")[0]) for line in (tmp_path / "run/metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 6400


def test_actor_processes_feed_the_learner(tmp_path):
    cfg = TrainConfig(core="rtrl-elstm", **dict(SMALL, num_actors=2, batch_rollouts=2, num_envs=4, total_frames=1600,
                                                 eval_episodes=0))
    result = train(cfg, tmp_path / "async", progress=False)
    assert result["frames"] == 1600 and result["updates"] == 20
    ev = evaluate_run(tmp_path / "async", episodes=8)
    assert set(ev) >= {"greedy", "sampled"}


def test_cli_errors_are_clear(tmp_path, capsys):
    assert main(["train", "--env", "no-such-env", "--run-dir", str(tmp_path / "a")]) == 2
    assert "unknown environment" in capsys.readouterr().err
    assert main(["train", "--unroll", "0", "--run-dir", str(tmp_path / "b")]) == 2
    assert "unroll length M must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--core", "transformer"])
    run = tmp_path / "c"
    train(TrainConfig(**dict(SMALL, total_frames=160, eval_episodes=0)), run, progress=False)
    (run / "checkpoints/latest.pt").write_bytes(b"garbage")
    assert main(["eval", str(run)]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert main(["train", *SYNC_CLI, "--run-dir", str(run), "--resume", "--total-frames", "320"]) == 2
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    json.loads((run / "config.json").read_text())  # the run folder itself is intact


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])  # Ctrl-C, and a scheduler's or `kill`'s stop
def test_ctrl_c_saves_and_resume_continues(tmp_path, signum):
    import signal
    import subprocess
    import sys
    import time

    from rtrl.runs import load_checkpoint

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "rtrl.cli", "train", *SYNC_CLI, "--total-frames", "10000000", "--checkpoint-every",
           "100000", "--log-every", "5", "--run-dir", str(run), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.csv").exists()
                                           and len((run / "metrics.csv").read_text().splitlines()) > 2):
        time.sleep(0.2)
    proc.send_signal(getattr(signal, signum))
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert "--resume" in err
    ckpt = load_checkpoint(run / "checkpoints/latest.pt", "r2ac")  # saved at the interrupt, not at 100000 updates
    updates = ckpt["learner"]["updates"]
    assert updates >= 10
    # saved between updates: the schedule and the frame counter agree with the update counter
    assert ckpt["learner"]["optimizer"]["updates"] == updates == ckpt["counters"]["frames"] // 160
    result = train(TrainConfig(**{**TrainConfig().__dict__, "total_frames": ckpt["step"] + 1600, "num_envs": 16,
                                  "num_actors": 0, "checkpoint_every": 100000, "log_every": 5, "eval_episodes": 0}),
                   run, resume=True, progress=False)
    assert result["updates"] == updates + 10


def test_full_episode_bptt_core(tmp_path):
    # Recall episodes last delay + 2 = 5 steps: one rollout of M = 5 is one whole episode
    result = train(TrainConfig(core="bptt-elstm", unroll=5, **dict(SMALL, eval_episodes=20)), tmp_path / "ok",
                   progress=False)
    assert result["eval"]["greedy"]["mean"] > 0.8, result
    with pytest.raises(ValueError, match="exactly one episode"):
        train(TrainConfig(core="bptt-elstm", unroll=4, **dict(SMALL, total_frames=640)), None, progress=False)


def test_load_and_freeze_the_stem(tmp_path):
    from rtrl.runs import load_checkpoint

    base = dict(SMALL, total_frames=1600, eval_episodes=0)
    train(TrainConfig(core="tbptt-elstm", **base), tmp_path / "pre", progress=False)
    train(TrainConfig(core="rtrl-elstm", load_stem=str(tmp_path / "pre"), freeze_stem=True, **base),
          tmp_path / "main", progress=False)
    pre = load_checkpoint(tmp_path / "pre/checkpoints/latest.pt", "r2ac")["agent"]
    main_ = load_checkpoint(tmp_path / "main/checkpoints/latest.pt", "r2ac")["agent"]
    stem = [k for k in pre if k.startswith("stem.")]
    assert stem and all(torch.equal(pre[k], main_[k]) for k in stem)  # loaded, then kept fixed
    with pytest.raises(ValueError, match="does not fit"):
        train(TrainConfig(encoder_width=8, load_stem=str(tmp_path / "pre"), **base), None, progress=False)


def _actor_pids(parent: int) -> list[int]:
    from pathlib import Path

    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and ("spawn_main" in cmd or "rtrl.cli" in cmd):  # spawned or forked actors
            pids.append(int(d.name))
    return pids


def test_a_killed_actor_is_restarted_and_training_goes_on(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "rtrl.cli", "train", "--preset", "small", "--num-actors", "2",
           "--batch-rollouts", "1",
           "--num-envs", "4", "--total-frames", "12000", "--eval-episodes", "0", "--log-every", "5",
           "--run-dir", str(run), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, pids = time.time() + 120, []
    while time.time() < deadline and not ((run / "metrics.csv").exists() and len(pids := _actor_pids(proc.pid)) == 2):
        time.sleep(0.2)
    assert len(pids) == 2, "actor processes not found"
    os.kill(pids[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["actor_restarts"] >= 1 and result["frames"] >= 12000
    assert "restarting it" in err


@pytest.mark.parametrize("delay", [1.5, 3.0])
def test_learner_sigkill_then_resume_loses_at_most_one_interval(tmp_path, delay):
    import signal
    import subprocess
    import sys
    import time

    from rtrl.runs import load_checkpoint

    run = tmp_path / "run"
    base = [*SYNC_CLI, "--total-frames", "10000000", "--checkpoint-every", "3", "--log-every", "3", "--eval-episodes",
            "0", "--run-dir", str(run), "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "rtrl.cli", "train", *base], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints/latest.pt").exists():
        time.sleep(0.05)
    time.sleep(delay)  # checkpoints are written every 3 updates: the kill lands anywhere, a write included
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    ckpt = load_checkpoint(run / "checkpoints/latest.pt", "r2ac")  # never a broken file
    done = ckpt["learner"]["updates"]
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    logged = max(int(r.split(",")[header_index(run, "updates")]) for r in rows)
    assert done > 0 and logged - done <= 3  # at most one checkpoint interval lost
    result = train(TrainConfig(total_frames=ckpt["step"] + 480, checkpoint_every=3, log_every=3, num_envs=16,
                               num_actors=0, eval_episodes=0), run, resume=True, progress=False)
    assert result["updates"] == done + 3  # the counter continues from the checkpoint
    assert load_checkpoint(run / "checkpoints/latest.pt", "r2ac")["counters"]["restarts"] == 1


def header_index(run, column: str) -> int:
    return (run / "metrics.csv").read_text().splitlines()[0].split(",").index(column)


@pytest.mark.parametrize("env, algo, core, preset", [
    ("CartPole-v1", "ppo", None, "ppo-vector"), ("CartPole-v1", "ppo", "none", "ppo-vector-ff"),
    ("PositionOnly/CartPole-v1", "ppo", "gru", "ppo-vector"), ("Pendulum-v1", "ppo", None, "ppo-pendulum"),
    ("PositionOnly/Pendulum-v1", "ppo", "none", "ppo-pendulum"), ("MountainCarContinuous-v0", "ppo", None, "ppo-box"),
    ("Pendulum-v1", "impala", None, "r2ac-box"),
    ("Hopper-v5", "ppo", "none", "ppo-box-ff"), ("rtrl-Recall-v0", "ppo", "none", "ppo-memory"),
    ("popgym-RepeatPreviousEasy-v0", "impala", None, "r2ac-memory"), ("ALE/Breakout-v5", "ppo", None, "ppo-pixels"),
    ("CartPole-v1", "impala", "none", "r2ac-vector"),
])
def test_the_preset_is_chosen_from_the_envs_family(env, algo, core, preset):
    from rtrl.rl.config import PRESETS, preset_for

    assert preset_for(env, algo, core=core) == preset
    assert PRESETS[preset].algo == ("ppo" if algo == "ppo" else "impala")


def test_a_plain_command_says_its_preset_and_a_run_without_episodes_says_what_to_change(tmp_path, capsys):
    # Acrobot's episodes last up to 500 steps: 4 envs x 10 steps end none of them
    run = tmp_path / "run"
    assert main(["train", "--env", "Acrobot-v1", "--core", "none", "--num-envs", "4", "--unroll", "10",
                 "--ppo-minibatches", "4", "--total-frames", "40", "--eval-episodes", "0", "--run-dir", str(run),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "preset ppo-vector-ff (discrete actions, vector observations" in err
    assert "no training episode finished in 40 frames (4 envs, 10 steps each)" in err and "--total-frames" in err
    assert f"learning curve: {run / 'curve.png'}" in err
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["algo"] == "ppo" and not cfg["obs_norm"] and cfg["critic"] == "separate" and cfg["num_envs"] == 4
    assert main(["plot", str(run)]) == 0  # into the run folder by default
    assert json.loads(capsys.readouterr().out)["plot"] == str(run / "curve.png")
