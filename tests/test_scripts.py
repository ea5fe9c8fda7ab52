"""Every benchmark and experiment script, run as a user runs it, at a tiny size: they must not rot.

Each runs in a subprocess with its smallest settings and writes into a temporary folder; the
test checks that it exits 0 and printed or wrote what it promises. The figures themselves are
not asserted (speed is measured by the scripts, never by tests).
"""

from __future__ import annotations

import json
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
    "streaming": (["--steps", "20", "--warmup", "5", "--reps", "1"], "steps/s"),
}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_runs(tmp_path, name):
    if name == "peers":
        pytest.importorskip("stable_baselines3", reason="benchmarks/peers.py needs the peers: pip install -e '.[peers]'")
        pytest.importorskip("sb3_contrib", reason="benchmarks/peers.py needs the peers: pip install -e '.[peers]'")
    args, expect = BENCHMARKS[name]
    assert expect.lower() in run([str(BENCH / f"{name}.py"), *args], tmp_path).lower()


PLANTED = """
import time

import pytest


def test_planted_failure():
    assert 1 + 1 == 3, "planted failure: the reason must reach the report"


def test_planted_skip():
    pytest.skip("planted skip")


def test_planted_hang():
    time.sleep(600)
"""


def test_device_check_reports_a_failing_test_with_its_reason_and_fails_on_a_skip(tmp_path):
    (tmp_path / "test_planted.py").write_text(PLANTED)
    planted = f"{tmp_path}/test_planted.py"
    out = subprocess.run([sys.executable, str(BENCH / "device_check.py"), "--device", "cpu", "--quick",
                          "--only", "tests", "--out", str(tmp_path / "out"),
                          "--tests", "tests/test_cuda.py::test_inference_path_on_cuda",
                          f"{planted}::test_planted_failure", f"{planted}::test_planted_skip"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OUT=""))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "planted failure: the reason must reach the report" in out.stdout
    assert "UNEXPECTED SKIP" in out.stdout and "planted skip" in out.stdout
    tests = json.loads((tmp_path / "out/device_check.json").read_text())["steps"]["tests"]
    assert tests["status"] == "failed" and tests["passed"] == 1
    assert [f["test"].rsplit("::", 1)[1] for f in tests["failed"]] == ["test_planted_failure"]
    assert "planted failure" in tests["failed"][0]["message"] and len(tests["skipped"]) == 1


def test_device_check_ends_within_its_budget_and_keeps_what_it_has(tmp_path):
    (tmp_path / "test_planted.py").write_text(PLANTED)
    out = subprocess.run([sys.executable, str(BENCH / "device_check.py"), "--device", "cpu", "--quick",
                          "--budget", "30", "--only", "tests,syncs",
                          "--tests", f"{tmp_path}/test_planted.py::test_planted_hang"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, OUT=str(tmp_path)))
    assert out.returncode == 1, out.stdout + out.stderr
    report = json.loads((tmp_path / "device_check.json").read_text())  # $OUT, written as each step ended
    assert report["steps"]["preflight"]["status"] == "ok"
    assert report["steps"]["tests"]["status"] == "timeout" and report["steps"]["syncs"]["status"] == "not run"
    assert report["total_s"] < 40 and "test_planted.py" in (tmp_path / "tests.log").read_text()


NEEDS = {  # experiments whose envs come with an optional package: (module, what installs it)
    "pixels": (("ale_py", "'rtrl[atari]'"), ("memory_gym", "--no-deps memory-gym==1.0.2"),
               ("procgen", "--no-deps procgen-mirror==0.10.7 gym3==0.3.3")),
}


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
    ("streaming", ["--lengths", "3", "--seeds", "0", "--steps", "300", "--eval-episodes", "2"],
     "streaming_table.md"),
    ("streaming/vs_ppo", ["--tasks", "popgym-RepeatFirstEasy-v0", "--seeds", "0", "--frames", "300",
                          "--eval-episodes", "2", "--floor-episodes", "20"],
     "streaming_popgym_table.md"),
    ("layers/recall", ["--seeds", "0", "--frames", "2560", "--lrs", "0.001", "--cores", "rtrl2-lru", "bptt2-lru"],
     "layers_rl_table.md"),
])
def test_experiment_runs(tmp_path, script, args, writes):
    for module, extra in NEEDS.get(script, ()):  # skipped without its package (CI installs it, and fails)
        pytest.importorskip(module, reason=f"experiments/{script} needs {module}: pip install {extra}")
    path = EXP / (f"{script}.py" if "/" in script else f"{script}/run.py")
    run([str(path), *args, "--out", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs")],
        tmp_path, timeout=600)
    assert (tmp_path / "docs" / writes).is_file()
