"""The examples/ scripts run, at tiny size, as a user runs them: a new Python process each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def _run(script: str, *args: str, cwd: Path) -> str:
    p = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=dict(os.environ),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_cleanrl_style_ppo_with_an_exact_rtrl_lru(tmp_path):
    pytest.importorskip("gymnasium")
    out = _run("ppo_lru_rtrl.py", "--total-timesteps", "1024", "--num-envs", "4", "--num-steps", "16", cwd=tmp_path)
    assert "done: 1024 steps" in out


def test_custom_env_train_evaluate_load_export(tmp_path):
    pytest.importorskip("gymnasium")
    pytest.importorskip("onnx")
    out = _run("custom_env.py", "--tiny", "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert "one episode in your own loop" in out and "exported" in out
    assert (tmp_path / "run" / "policy.onnx").is_file() and (tmp_path / "run" / "policy.pt").is_file()


def test_the_readmes_python_api_snippet_runs_as_written(tmp_path):
    pytest.importorskip("gymnasium")
    readme = (EXAMPLES.parent / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    snippet = next(b for b in blocks if "gym.make_vec" in b)
    p = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=dict(os.environ), capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "runs" / "mine" / "eval.json").is_file() and "'mean'" in p.stdout
