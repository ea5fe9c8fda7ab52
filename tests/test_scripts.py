"""Every benchmark and experiment script, run as a user runs it, at a tiny size: they must not rot.

Each runs in a subprocess with its smallest settings and writes into a temporary folder; the
test checks that it exits 0 and printed or wrote what it promises. The figures themselves are
not asserted (speed is measured by the scripts, never by tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str], tmp_path: Path, timeout: float = 300) -> str:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=timeout,
                         env=env)
    assert out.returncode == 0, f"{' '.join(args)}\nstdout:\n{out.stdout[-2000:]}\nstderr:\n{out.stderr[-3000:]}"
    return out.stdout


BENCH = ROOT / "benchmarks"
EXP = ROOT / "experiments"


BENCHMARKS = {  # script: (tiny arguments, a word its output must contain)
    "r2ac_throughput": (["--quick", "--no-ppo", "--frames", "5120"], "e2e/env"),
    "rtrl_speed": (["--no-elstm", "--no-memory", "--cells", "lru", "--cell-size", "16", "--cell-steps", "5", "--reps",
                    "1"], "lru"),
    "complexity": (["--quick", "--out", "complexity.png"], "exponent"),
    "rules_cost": (["--sizes", "8", "--exact-max", "8", "--steps", "4", "--reps", "1"], "uoro"),
    "scaling": (["--frames", "5120", "--no-ray"], "local backend"),
    "env_throughput": (["--seconds", "0.1", "--num-envs", "2", "--suites", "rtrl-Recall-v0"], "rtrl-Recall"),
    "vector_envs": (["--num-envs", "4", "--seconds", "0.1"], "MiniGrid"),
    "device_check": (["--device", "cpu", "--quick"], "summary"),
    "layers_cost": (["--sizes", "4", "8", "--steps", "2", "--segment", "2", "--reps", "1"], "exponent"),
    "peers": (["--seeds", "0", "--budget", "512"], "time ratio"),
    "envpool_speed": (["--seconds", "0.05", "--num-envs", "2", "--envs", "CartPole-v1"], "rtrl"),
}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_runs(tmp_path, name):
    if name == "peers":
        pytest.importorskip("stable_baselines3", reason="benchmarks/peers.py needs the peers: pip install -e '.[peers]'")
        pytest.importorskip("sb3_contrib", reason="benchmarks/peers.py needs the peers: pip install -e '.[peers]'")
    args, expect = BENCHMARKS[name]
    assert expect.lower() in run([str(BENCH / f"{name}.py"), *args], tmp_path).lower()


@pytest.mark.parametrize("script, args, writes", [
    ("copy", ["--seeds", "0", "--max-sequences", "64"], "copy_task_table.md"),
    ("memory", ["--seeds", "0", "--frames", "2560"], "memory_table.md"),
    ("rules", ["--parts", "memory", "--seeds", "0", "--frames", "2560"], "rules_table.md"),
    ("pixels", ["--scale", "0.00002", "--parallel", "1", "--eval-episodes", "0"], "pixels_table.md"),
    ("continuous", ["--seeds", "0", "--frames", "2048", "--cores", "rtrl-rtu", "none"], "continuous_table.md"),
    ("promise", ["--part", "long", "--seeds", "0", "--scale", "0.0005"], "promise_long_table.md"),
    ("promise", ["--part", "batch", "--seeds", "0", "--scale", "0.002"], "promise_batch_table.md"),
    ("limits", ["--parts", "online", "--agents", "LRU, exact RTRL, M=1", "--seeds", "0", "--scale", "0.003"],
     "limits_table.md"),
    ("headline", ["--tasks", "popgym-CountRecallEasy-v0", "--seeds", "0", "--frames", "2560"], "headline_table.md"),
    ("reference", ["--rows", "ppo-cartpole", "rec-pendulum", "--seeds", "0", "--scale", "0.005"], "reference_table.md"),
    ("layers", ["--seeds", "0", "--max-sequences", "32", "--hidden-size", "8"], "layers_table.md"),
    ("layers/recall", ["--seeds", "0", "--frames", "2560", "--lrs", "0.001", "--cores", "rtrl2-lru", "bptt2-lru"],
     "layers_rl_table.md"),
])
def test_experiment_runs(tmp_path, script, args, writes):
    path = EXP / (f"{script}.py" if "/" in script else f"{script}/run.py")
    run([str(path), *args, "--out", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs")],
        tmp_path, timeout=600)
    assert (tmp_path / "docs" / writes).is_file()
