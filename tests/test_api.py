"""The Python API (train with a user's env, evaluate, load_agent) and policy export (TorchScript, ONNX).

The ONNX round trip: a trained run's policy exported by ``rtrl export``, run in onnxruntime for 100
steps of real episodes (4-step episodes: many resets) beside the PyTorch agent that was trained;
the same greedy actions and values at every step, float32 tolerance |Δ| ≤ 1e-5 + 1e-4·|x|."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rtrl.api import TrainConfig, evaluate, export, load_agent, train
from rtrl.rl.agent import CORES, WHOLE_EPISODE_CORES, Agent
from rtrl.rl.envs import make_env
from rtrl.rl.policy import Policy

gym = pytest.importorskip("gymnasium")
TESTS = Path(__file__).parent
ATOL, RTOL = 1e-5, 1e-4


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("core, critic", [(c, critic) for c in CORES if c not in WHOLE_EPISODE_CORES
                                          for critic in ("shared", "separate")
                                          if critic == "shared" or c not in ("snap1-lstm", "uoro-lstm")])
def test_policy_step_is_the_agents_step_for_every_core(core, continuous, critic):
    # the exported step is written apart from the training path (real (re, im) pairs for complex
    # states): it must give the same logits, values and state as the Agent, through resets
    torch.manual_seed(0)
    agent = Agent((3,), 2, core=core, hidden_size=6, encoder_width=5, continuous=continuous, critic=critic)
    policy = Policy(agent)
    B = 4
    state, s = agent.initial_state(B, learner=False), policy.initial_state(B)
    first = torch.ones(B, dtype=torch.bool)
    for t in range(30):
        obs, r = torch.randn(B, 3), torch.randn(B)
        with torch.no_grad():
            logits, value, state = agent(obs[None], r[None], first[None], state)
        _, v, params, s = policy(obs, r, first.float(), s)
        torch.testing.assert_close(params, logits[0], atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(v, value[0], atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(s, policy.real_state(state), atol=ATOL, rtol=RTOL)
        first = torch.rand(B) < 0.2


def _trained_run(tmp_path: Path, env: str, core: str) -> Path:
    run = tmp_path / "run"
    train(TrainConfig(env=env, core=core, hidden_size=8, encoder_width=8, num_envs=4, num_actors=0, unroll=5,
                      total_frames=200, eval_episodes=0, seed=1), run_dir=run, progress=False)
    return run


@pytest.mark.parametrize("env, core", [
    ("byo_envs:Tick-v0", "rtrl-lru"),     # discrete, complex state (as real pairs)
    ("byo_envs:TickBox-v0", "rtrl-rtu"),  # Box actions, complex state
    ("rtrl-Recall-v0", "rtrl-elstm"),     # discrete, real state, random cues
    ("byo_envs:TickBox-v0", "lstm"),      # Box actions, [h; c]
])
def test_onnx_and_torchscript_round_trip_100_steps_with_resets(tmp_path, env, core):
    ort = pytest.importorskip("onnxruntime")
    importlib.import_module("byo_envs")
    run = _trained_run(tmp_path, env, core)
    from rtrl.cli import main

    assert main(["export", str(run), "--format", "onnx"]) == 0
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    meta = json.loads((run / "policy.onnx.json").read_text())
    session = ort.InferenceSession(str(run / "policy.onnx"))
    scripted = torch.jit.load(str(run / "policy.pt"))
    # the reference: the trained Agent itself (rtrl's training code path), not the exported module
    cfg = TrainConfig(**json.loads((run / "config.json").read_text()))
    vec = make_env(env, 4)
    from rtrl.rl.config import build_agent

    agent = build_agent(cfg, vec)
    agent.load_state_dict(torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["agent"])
    obs, r, first = vec.reset(7), np.zeros(4, np.float32), np.ones(4, np.float32)
    state = agent.initial_state(4, learner=False)
    s_onnx = np.zeros((4, meta["state_size"]), np.float32)
    s_ts = torch.zeros(4, meta["state_size"])
    resets = 0
    for t in range(100):
        with torch.no_grad():
            params, value, state = agent(torch.as_tensor(obs)[None], torch.as_tensor(r)[None],
                                         torch.as_tensor(first > 0)[None], state)
        params, value = params[0], value[0]
        a = params.argmax(-1) if not agent.continuous else params[:, : agent.num_actions]
        want_action = np.stack([vec._decode(x) for x in a.numpy()]) if agent.continuous else a.numpy()
        inputs = dict(obs=obs, prev_reward=r, first=first, state=s_onnx)
        action, v, p, s_onnx = session.run(None, inputs)
        ts_action, ts_v, _, s_ts = scripted(*(torch.as_tensor(inputs[k]) for k in ("obs", "prev_reward", "first")), s_ts)
        for got in (action, ts_action.numpy()):
            if agent.continuous:
                np.testing.assert_allclose(got, want_action, atol=ATOL, rtol=RTOL)
            else:
                np.testing.assert_array_equal(got, want_action)
        np.testing.assert_allclose(v, value.numpy(), atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(ts_v.numpy(), value.numpy(), atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(p, params.numpy(), atol=ATOL, rtol=RTOL)
        obs, r, done = vec.step(a.numpy())
        first = done.astype(np.float32)
        resets += int(done.sum())
    assert resets >= 40  # 4 envs, episodes of at most 5 steps: the state is reset again and again


def test_load_agent_act_and_the_python_api_with_a_users_env(tmp_path):
    importlib.import_module("byo_envs")
    venv = gym.make_vec("TickBox-v0", 4, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    result = train(TrainConfig(core="rtrl-lru", hidden_size=8, total_frames=200, eval_episodes=4), env=venv,
                   run_dir=tmp_path / "a", progress=False)
    assert result["env"] == "object:TickBox-v0" and result["eval"]["greedy"]["mean"] > 0
    assert evaluate(tmp_path / "a", env=venv, episodes=6)["returns"].__len__() == 6
    with pytest.raises(ValueError, match="Python env object.*pass the env again"):
        evaluate(tmp_path / "a", episodes=2)
    with pytest.raises(ValueError, match="actor processes need an env name"):
        train(env=venv, num_actors=2, total_frames=10)
    import byo_envs

    result = train(env=byo_envs.Tick, algo="ppo", num_envs=4, ppo_minibatches=2, total_frames=160, eval_episodes=0,
                   run_dir=tmp_path / "b", progress=False)  # a factory: cfg.num_envs copies
    assert result["algo"] == "ppo" and result["frames"] >= 160
    policy = load_agent(tmp_path / "a")
    state = policy.initial_state(2)
    action, state = policy.act(np.array([[0.0, 1.0], [0.1, 1.0]], np.float32), state)
    assert action.shape == (2, 2) and (action.abs() <= 2).all() and state.shape == (2, policy.state_size)
    with pytest.raises(ValueError, match=r"observations of shape \(2, 3\)"):
        policy.act(np.zeros((2, 3), np.float32), state)
    with pytest.raises(ValueError, match="unknown training option.*lerning_rate.*TrainConfig has: .*lr"):
        train(env="CartPole-v1", lerning_rate=1e-3)
    with pytest.raises(ValueError, match="not one gymnasium.Env"):
        train(env=gym.make("TickBox-v0"), total_frames=10)


def test_export_errors_are_one_line(tmp_path):
    p = subprocess.run([sys.executable, "-m", "rtrl.cli", "export", str(tmp_path), "--format", "onnx"],
                       capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert p.returncode == 2 and "is not a run folder (no config.json)" in p.stderr and "Traceback" not in p.stderr
