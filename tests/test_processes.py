"""Processes that do not outlive their learner, and signals that never cut an update in half.
Real processes and real signals: a learner killed with ``kill -9``, a SIGTERM sent in the middle
of an optimiser step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rtrl.cli import main
from rtrl.runs import Run, load_checkpoint


def alive(pid: int) -> bool:
    """Whether any thread of ``pid`` still runs. A zombie (dead, not yet reaped by its new parent)
    does not; its main thread can be one while others still exit, holding its open files."""
    try:
        return any((t / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
                   for t in Path(f"/proc/{pid}/task").iterdir())
    except (OSError, IndexError):
        return False


def actor_pids(parent: int) -> list[int]:
    """The actor processes (spawned or forked children) of ``parent``."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and ("spawn_main" in cmd or "rtrl.cli" in cmd):
            pids.append(int(d.name))
    return pids


def error_line(err: str, command: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"rtrl {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the actor processes through /proc")
def test_kill_9_of_a_learner_ends_its_actors_and_frees_its_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--preset", "small", "--num-actors", "2", "--num-envs", "4", "--checkpoint-every", "5", "--log-every", "5",
            "--eval-episodes", "0", "--run-dir", str(run), "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "rtrl.cli", *args, "--total-frames", "10000000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ((run / "checkpoints/latest.pt").exists()
                                               and len(pids := actor_pids(proc.pid)) == 2):
            time.sleep(0.2)
        assert len(pids) == 2 and proc.poll() is None, "the learner and its two actors did not start"
        # a second writer while the run lives is refused (it would interleave the CSV, drop checkpoints)
        step = load_checkpoint(run / "checkpoints/latest.pt", "r2ac")["step"]
        assert main([*args, "--resume", "--total-frames", str(step + 40)]) == 2
        assert f"in use by process {proc.pid}" in error_line(capsys.readouterr().err, "train")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.time() + 10
        while time.time() < deadline and any(map(alive, pids)):
            time.sleep(0.1)
        assert not any(map(alive, pids)), "actor processes outlived their learner"
        # the kernel dropped the dead learner's lock: the run can be resumed
        Run(run, json.loads((run / "config.json").read_text()), resume=True, tensorboard=False).close()
    finally:
        proc.kill()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("algo", ["impala", "ppo"])
def test_sigterm_inside_an_update_saves_counters_that_match_the_weights(tmp_path, monkeypatch, algo):
    """A real SIGTERM, sent from inside the third optimiser step (the real step, then the signal),
    the worst moment: the weights have moved, the update's counters not yet."""
    from rtrl.rl import optim

    run = tmp_path / "run"
    ppo = (["--num-envs", "4", "--unroll", "10", "--ppo-epochs", "2", "--ppo-minibatches", "2"] if algo == "ppo"
           else ["--num-envs", "16", "--num-actors", "0"])
    real_step, opt_steps = optim._Optimizer.step, []

    def step_then_sigterm_at_the_third(self) -> None:
        real_step(self)
        opt_steps.append(1)
        if len(opt_steps) == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(optim._Optimizer, "step", step_then_sigterm_at_the_third)
    preset = ["--preset", "ppo" if algo == "ppo" else "small"]
    assert main(["train", *preset, *ppo, "--total-frames", "100000", "--checkpoint-every", "1000",
                 "--eval-episodes", "0", "--run-dir", str(run), "--no-progress"]) == 130
    ckpt = load_checkpoint(run / "checkpoints/latest.pt", "ppo" if algo == "ppo" else "r2ac")
    trainer = ckpt["ppo" if algo == "ppo" else "learner"]
    updates = trainer["updates"]
    per_update, frames = (4, 40) if algo == "ppo" else (1, 160)  # optimiser steps and frames of one update
    assert updates >= 1 and len(opt_steps) == updates * per_update  # the weights saved are after `updates` updates
    assert int(trainer["optimizer"]["state"][0]["step"]) == updates * per_update
    assert trainer["optimizer"]["updates"] == updates and ckpt["counters"]["frames"] == updates * frames


TESTS = Path(__file__).parent


def cli(args: list[str], fault: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    """``rtrl`` in a process of its own session (its actors killed with it after a timeout), with
    ``tests/`` importable (``byo_envs``) and ``BYO_FAULT`` set to ``fault``."""
    env = dict(os.environ, BYO_FAULT=fault,
               PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-m", "rtrl.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_an_env_that_keeps_raising_in_an_actor_stops_the_run_resumably(tmp_path):
    """Before: the learner restarted the actor without end (41 times a minute), a traceback each time."""
    pytest.importorskip("gymnasium")
    run = tmp_path / "run"
    args = ["train", "--preset", "small", "--env", "byo_envs:Faulty-v0", "--num-actors", "1", "--num-envs", "2",
            "--unroll", "3",
            "--eval-episodes", "0", "--run-dir", str(run), "--no-progress"]
    p = cli([*args, "--actor-restarts", "1", "--total-frames", "600"], fault="raise")
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("Traceback (most recent call last)") == 1  # the env's own traceback, once
    assert p.stderr.count("RuntimeError: the simulator crashed") == 3  # the traceback, the warning, the error
    assert "restarting it in 1 s (restart 1 of 1 in a row)" in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("rtrl train: error: actor 0 failed 2 times in a row "
                           "(last: RuntimeError: the simulator crashed)"), last
    assert "--resume" in last and "--actor-restarts" in last, last
    assert load_checkpoint(run / "checkpoints/latest.pt", "r2ac")["step"] == 0
    p = cli([*args, "--resume", "--total-frames", "600"])  # the env fixed: the run goes on from there
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["frames"] == 600


def test_an_actor_that_hangs_counts_as_failed(tmp_path, monkeypatch):
    pytest.importorskip("gymnasium")
    import importlib

    from rtrl.rl.actors import ActorError, LocalActors
    from rtrl.rl.config import EnvSpec, TrainConfig, build_agent
    from rtrl.rl.envs import make_env

    importlib.import_module("byo_envs")
    cfg = TrainConfig(env="byo_envs:FaultyHang-v0", num_actors=1, num_envs=2, unroll=3, actor_restarts=1)
    probe = make_env(cfg.env, 1)
    spec = EnvSpec.of(probe)
    probe.close()
    actors = LocalActors(cfg, build_agent(cfg, spec), spec)
    pids: list[int] = []
    try:
        pids.append(actors.procs[0].pid)
        start = time.monotonic()
        with pytest.raises(ActorError, match="actor 0 failed 2 times in a row .last: no rollout for 2 s"):
            actors.get(1, timeout_s=2.0)
        pids.append(actors.procs[0].pid)
        assert actors.restarts == 1 and len(set(pids)) == 2 and time.monotonic() - start < 60
        assert not any(map(alive, pids))  # each hung actor was ended, not left behind
    finally:
        actors.close()
