"""Observations checked against the space the run started with, at the env adapter: a shape that
grows or shrinks mid-episode, NaN inside a space's finite bounds, a discrete value out of range,
a batch of the wrong dtype. Each stops the run with one line naming the env, the step and both
shapes (nothing padded, cut or wrapped to fit), in-process, in actor processes and under PPO alike,
with a checkpoint to resume from. Real envs: ``tests/byo_envs.py``'s ``Faulty*`` (a Box(4) env
whose second step of every episode misbehaves)."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from rtrl.cli import main  # noqa: E402
from rtrl.rl.envs import RecallVecEnv, make_env  # noqa: E402
from rtrl.rl.envs.base import ObservationError  # noqa: E402
from rtrl.rl.envs.gymnasium import _space_encoder  # noqa: E402
from rtrl.runs import load_checkpoint  # noqa: E402

TESTS = Path(__file__).parent
SHAPES = {"Grow": "has shape (6,), but the run started with (4,)",
          "Shrink": "has shape (2,), but the run started with (4,)"}


@pytest.fixture(autouse=True)
def byo_envs():
    importlib.import_module("byo_envs")


def error_line(err: str, command: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"rtrl {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("fault", ["Grow", "Shrink"])
def test_an_observation_whose_shape_changes_is_refused_at_the_adapter(fault):
    """Before: a shrunk observation was zero-padded into the run's buffer (the run went on, exit 0);
    a grown one failed in numpy ("could not broadcast input array from shape (6,) into shape (4,))."""
    env = make_env(f"byo_envs:Faulty{fault}-v0", 2)
    env.reset(0)
    env.step(np.zeros(2, np.int64))
    with pytest.raises(ObservationError) as e:
        env.step(np.zeros(2, np.int64))
    msg = str(e.value)
    assert msg.startswith(f"byo_envs:Faulty{fault}-v0: env 0's observation at step 2 {SHAPES[fault]}"), msg
    assert "\n" not in msg


@pytest.mark.parametrize("algo, fault", [("impala", "Shrink"), ("impala", "Grow"), ("ppo", "Shrink")])
def test_the_run_stops_with_one_line_and_a_checkpoint(tmp_path, capsys, algo, fault):
    run = tmp_path / "run"
    args = ["train", "--preset", "ppo" if algo == "ppo" else "small", "--env", f"byo_envs:Faulty{fault}-v0",
            "--num-envs", "2", "--unroll", "4", "--total-frames", "400", "--eval-episodes", "0", "--run-dir", str(run),
            "--no-progress"]
    if algo == "ppo":
        args += ["--ppo-minibatches", "1"]
    else:
        args += ["--num-actors", "0"]
    assert main(args) == 2
    line = error_line(capsys.readouterr().err, "train")
    assert f"byo_envs:Faulty{fault}-v0: env 0's observation at step 2 {SHAPES[fault]}" in line
    assert load_checkpoint(run / "checkpoints/latest.pt")["step"] == 0  # resumable once the env is fixed


def test_in_an_actor_process_too_and_without_restarts(tmp_path):
    path = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    cmd = [sys.executable, "-m", "rtrl.cli", "train", "--preset", "small", "--env", "byo_envs:FaultyGrow-v0",
           "--num-actors", "1",
           "--num-envs", "2", "--unroll", "4", "--total-frames", "400", "--eval-episodes", "0",
           "--run-dir", str(tmp_path / "run"), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        err = proc.communicate(timeout=120)[1]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 2, err
    line = error_line(err, "train")
    assert f"byo_envs:FaultyGrow-v0: env 0's observation at step 2 {SHAPES['Grow']}" in line
    assert "restarting" not in err  # restarting cannot fix an env's shapes


def test_nan_inside_finite_bounds_is_outside_the_space():
    env = make_env("byo_envs:FaultyNan-v0", 2)
    env.reset(0)
    env.step(np.zeros(2, np.int64))
    with pytest.raises(ObservationError, match=r"env 0's observation at step 2 holds NaN/Inf at entries "
                                               r"\[1\], where its space's bounds are finite"):
        env.step(np.zeros(2, np.int64))
    # an env without declared bounds (rtrl's own Recall) hands NaN on to the learners' guards (test_guards.py)
    assert make_env("rtrl-Recall-v0", 2).obs_finite is None


def test_discrete_values_out_of_range_are_refused_not_wrapped():
    """Before: the one-hot of -1 was the last action's (numpy's negative index), silently."""
    n, encode = _space_encoder(gym.spaces.Discrete(3, start=1))
    assert encode(3).tolist() == [0, 0, 1]
    for bad in (0, 4, -1):
        with pytest.raises(ObservationError, match=f"is {bad}, outside its observation space Discrete"):
            encode(bad)
    _, encode = _space_encoder(gym.spaces.MultiDiscrete([2, 3]))
    with pytest.raises(ObservationError, match=r"is \[1, 3\], outside"):
        encode(np.array([1, 3]))
    space = gym.spaces.Dict({"a": gym.spaces.Box(0, 1, (2,)), "b": gym.spaces.Discrete(2)})
    _, encode = _space_encoder(space)
    with pytest.raises(ObservationError, match=r"has shape \(3,\) \(its part \['a'\]\)"):
        encode({"a": np.zeros(3), "b": 0})


class WrongBatch(RecallVecEnv):
    """A user's VecEnv whose reset returns what ``bad`` says instead of its observations."""

    def __init__(self, bad: str) -> None:
        super().__init__(2)
        self.bad = bad

    def _reset(self, seed):
        obs = super()._reset(seed)
        bad = {"shape": obs[:, :3], "dtype": obs.astype(np.complex64), "float64": obs.astype(np.float64)}
        return bad[self.bad]


def test_a_users_vecenv_batch_is_checked_for_shape_and_dtype():
    for bad, match in (("shape", r"batch has shape \(2, 3\), but the run started with \(2, 4\)"),
                       ("dtype", "batch has dtype complex64, but the run started with float32")):
        with pytest.raises(ObservationError, match=r"rtrl-Recall3-v0: an observation at reset " + match):
            WrongBatch(bad).reset(0)
    assert WrongBatch("float64").reset(0).dtype == np.float32  # a float of another width is converted
