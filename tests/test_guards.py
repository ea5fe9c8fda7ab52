"""Guards of training: hyper-parameters refused where they are read, NaN from an environment, in
the loss and in the gradient each reaching the guard (update skipped, weights kept, a warning),
and divergence stopping a run with one line that says what to change."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from rtrl.cli import main
from rtrl.rl.actors import ActorLoop
from rtrl.rl.agent import Agent
from rtrl.rl.config import TrainConfig
from rtrl.rl.envs.recall import RecallVecEnv
from rtrl.rl.learner import Learner, LearnerConfig, NonFiniteError
from rtrl.rl.ppo import PPO, Collector


def error_line(err: str, command: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"rtrl {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


class FaultyRecall(RecallVecEnv):
    """Recall whose env 0 returns a NaN observation (or reward) at steps ``nan_steps`` of the batch:
    a real environment with a real fault, as an emulator or a physics engine that blows up."""

    def __init__(self, num_envs: int, field: str, nan_steps: range) -> None:
        super().__init__(num_envs)
        self.field, self.nan_steps, self.t = field, nan_steps, 0

    def _step(self, actions):
        obs, reward, done = super()._step(actions)
        self.t += 1
        if self.t in self.nan_steps:
            (obs[0] if self.field == "obs" else reward)[0] = np.nan
        return obs, reward, done


def params(agent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.parameters()]


def same(a: list[torch.Tensor], agent) -> bool:
    return all(torch.equal(x, p) for x, p in zip(a, agent.parameters()))


# -- hyper-parameters -------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--grad-clip", "-1"], "grad_clip must be a positive number"),  # would be gradient ascent
    (["--grad-clip", "0"], "grad_clip must be a positive number"),
    (["--discount", "2"], "discount must be in (0, 1]"),
    (["--discount", "0"], "discount must be in (0, 1]"),
    (["--value-weight", "nan"], "value_weight must be a finite number >= 0"),
    (["--entropy-weight", "inf"], "entropy_weight must be a finite number >= 0"),
    (["--algo", "ppo", "--grad-clip", "0"], "grad_clip must be a positive number"),
    (["--seed", "-1", "--num-actors", "1"], "seed must be an integer in [0, 100000]"),  # killed 101 actors
    (["--algo", "ppo", "--seed", "-1"], "seed must be an integer in [0, 100000]"),
    (["--rms-eps", "-1"], "rms_eps must be a positive number"),  # flipped the step's sign
    (["--rms-alpha", "2"], "rms_alpha must be in [0, 1)"),  # was reported as divergence
    (["--algo", "ppo", "--rms-alpha", "1"], "rms_alpha must be in [0, 1)"),
    (["--forget-bias", "nan"], "forget_bias must be a finite number"),
    (["--hidden-size", "1000000000"], "--hidden-size 1000000000 with --encoder-width 64"),  # was a traceback
    (["--algo", "ppo", "--core", "lstm", "--hidden-size", "100000000"], "needs at least"),
])
def test_bad_hyper_parameters_are_refused(tmp_path, capsys, args, message):
    run = tmp_path / "run"
    preset = ["--preset", "ppo" if "ppo" in args else "small"]
    assert main(["train", *preset, *args, "--total-frames", "160", "--eval-episodes", "0", "--run-dir", str(run),
                 "--no-progress"]) == 2
    assert message in error_line(capsys.readouterr().err, "train")
    assert not run.exists()


def test_hyper_parameters_are_checked_where_they_are_read():
    """Library use skips TrainConfig.validate: the learner and PPO check what they read."""
    agent = Agent((4,), 2, hidden_size=8)
    with pytest.raises(ValueError, match="grad_clip"):
        Learner(agent, LearnerConfig(grad_clip=-1.0), num_streams=2)
    with pytest.raises(ValueError, match="discount"):
        Learner(agent, LearnerConfig(discount=2.0), num_streams=2)
    with pytest.raises(ValueError, match="discount"):
        PPO(agent, TrainConfig(algo="ppo", discount=1.5))
    with pytest.raises(ValueError, match="rms_eps"):
        Learner(agent, LearnerConfig(rms_eps=-1.0), num_streams=2)
    with pytest.raises(ValueError, match="rms_alpha"):
        PPO(agent, TrainConfig(algo="ppo", rms_alpha=1.0))
    with pytest.raises(ValueError, match="forget_bias"):
        Agent((4,), 2, "rtrl-elstm", hidden_size=8, forget_bias=float("nan"))
    with pytest.raises(ValueError, match="eval_episodes"):
        TrainConfig(eval_episodes=-1).validate()


# -- NaN reaching the guard ------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["obs", "reward"])
def test_nan_from_an_environment_skips_the_r2ac_update(field):
    torch.manual_seed(0)
    env = FaultyRecall(4, field, range(2, 3))
    agent = Agent(env.obs_shape, env.num_actions, "rtrl-elstm", hidden_size=8)
    learner = Learner(agent, LearnerConfig(), num_streams=4)
    loop = ActorLoop(env, agent, 5, 0, seed=0)
    r, _ = loop.rollout()  # the actor acts on, the NaN stays in the rollout for the learner to see
    assert not torch.isfinite(getattr(r, field)).all()
    before = params(agent)
    with pytest.raises(NonFiniteError, match="weights kept"):
        learner.update(r)
    assert same(before, agent) and learner.skipped == 1 and learner.updates == 0
    learner.update(loop.rollout()[0])  # the streams go on
    assert learner.updates == 1


@pytest.mark.parametrize("field", ["obs", "reward"])
def test_nan_from_an_environment_skips_the_ppo_update(field):
    torch.manual_seed(0)
    cfg = TrainConfig(algo="ppo", num_envs=4, unroll=5, ppo_minibatches=2, hidden_size=8)
    env = FaultyRecall(4, field, range(2, 3))
    agent = Agent(env.obs_shape, env.num_actions, "rtrl-elstm", hidden_size=8)
    ppo, collector = PPO(agent, cfg), Collector(env, agent, 5, seed=0)
    seg, _ = collector.collect()
    assert not torch.isfinite(getattr(seg, field)).all()
    before = params(agent)
    with pytest.raises(NonFiniteError, match="weights kept"):
        ppo.update(seg)
    assert same(before, agent) and ppo.skipped == 1 and ppo.updates == 0
    ppo.update(collector.collect()[0])
    assert ppo.updates == 1


def _rollouts(unroll: int = 3):
    """An RTRL agent, its learner and two real Recall rollouts (the second starts mid-episode)."""
    torch.manual_seed(0)
    env = RecallVecEnv(4)
    agent = Agent(env.obs_shape, env.num_actions, "rtrl-elstm", hidden_size=8)
    loop = ActorLoop(env, agent, unroll, 0, seed=0)
    return agent, Learner(agent, LearnerConfig(), num_streams=4), loop.rollout()[0], loop.rollout()[0]


def test_nan_in_the_loss_reaches_the_r2ac_guard():
    """Finite inputs, a non-finite loss: unclipped rewards of 1e30 square to inf in the value loss."""
    agent, _, r, _ = _rollouts()
    learner = Learner(agent, LearnerConfig(reward_clip=0.0), num_streams=4)
    r.reward[1:] = 1e30
    before = params(agent)
    with pytest.raises(NonFiniteError, match="non-finite loss"):
        learner.update(r)
    assert same(before, agent) and learner.skipped == 1 and learner.updates == 0


def test_nan_in_the_gradient_reaches_the_r2ac_guard():
    agent, learner, r1, r2 = _rollouts()
    learner.update(r1)
    for s in learner.bank.sensitivities:  # sensitivities that blew up: the loss is finite, the carry-in is not
        s.fill_(3e38)
    before = params(agent)
    with pytest.raises(NonFiniteError, match="non-finite gradient"):
        learner.update(r2)
    assert same(before, agent) and learner.skipped == 1 and learner.updates == 1


def test_nan_in_the_loss_and_the_gradient_reach_the_ppo_guard():
    torch.manual_seed(0)
    cfg = TrainConfig(algo="ppo", num_envs=4, unroll=3, ppo_minibatches=2, hidden_size=8)
    env = RecallVecEnv(4)
    agent = Agent(env.obs_shape, env.num_actions, "rtrl-elstm", hidden_size=8)
    ppo, collector = PPO(agent, cfg), Collector(env, agent, 3, seed=0)
    _, collector.state = ppo.update(collector.collect()[0])
    seg, _ = collector.collect()  # starts mid-episode: the carry-in term counts
    for s in seg.state.sensitivities:
        s.fill_(3e38)
    before = params(agent)
    with pytest.raises(NonFiniteError, match="non-finite loss or gradient"):
        ppo.update(seg)
    assert same(before, agent) and ppo.skipped == 1
    seg, _ = collector.collect()
    with torch.no_grad():
        agent.policy.weight.fill_(3e38)
    before = params(agent)
    with pytest.raises(NonFiniteError, match="non-finite loss or gradient"):
        ppo.update(seg)
    assert same(before, agent) and ppo.skipped == 2 and ppo.updates == 1


ALGO_ARGS = {"impala": ["--preset", "small", "--num-envs", "16", "--num-actors", "0"], "ppo": ["--preset", "ppo", "--num-envs", "4", "--unroll", "10", "--ppo-minibatches", "2",
                                   "--ppo-epochs", "1"]}


@pytest.mark.parametrize("algo", ["impala", "ppo"])
def test_a_run_skips_a_nan_and_stops_when_the_environment_keeps_giving_them(tmp_path, capsys, monkeypatch, algo):
    """The NaN environment reaches training through ``make_env`` (the registry has no user envs)."""
    import rtrl.rl.envs

    args = ["train", *ALGO_ARGS[algo], "--eval-episodes", "0", "--log-every", "1", "--no-progress"]
    frames = 40 if algo == "ppo" else 160  # per update
    nan_steps = range(12, 13)
    monkeypatch.setattr(rtrl.rl.envs, "make_env", lambda name, n, seed=0, evaluation=False:
                        FaultyRecall(n, "obs", nan_steps))
    assert main([*args, "--total-frames", str(3 * frames), "--run-dir", str(tmp_path / "once")]) == 0
    out, err = capsys.readouterr()
    assert '"skipped_updates": 1' in out and '"updates": 3' in out
    assert "warning:" in err and "weights kept" in err
    nan_steps = range(12, 10**9)
    assert main([*args, "--total-frames", str(100 * frames), "--run-dir", str(tmp_path / "always")]) == 2
    line = error_line(capsys.readouterr().err, "train")
    assert "in a row" in line and "environment" in line


# -- divergence ------------------------------------------------------------------------------------

@pytest.mark.parametrize("algo", ["impala", "ppo"])
@pytest.mark.parametrize("lr", ["1e6", "1e20"])
def test_divergence_stops_the_run_with_one_line_saying_what_to_change(tmp_path, capsys, algo, lr):
    args = ["train", *ALGO_ARGS[algo], "--lr", lr, "--total-frames", "4000", "--eval-episodes", "0",
            "--run-dir", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 2
    line = error_line(capsys.readouterr().err, "train")
    assert "diverged" in line and "--lr" in line


def test_divergence_in_actor_processes_stops_the_learner(tmp_path):
    cmd = [sys.executable, "-m", "rtrl.cli", "train", "--preset", "small", "--num-actors", "2", "--num-envs", "4",
           "--lr", "1e20",
           "--total-frames", "100000", "--eval-episodes", "0", "--run-dir", str(tmp_path / "run"), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        err = proc.communicate(timeout=120)[1]
    finally:
        try:  # whatever is left of the session this test started: the learner, its actors
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 2, err
    line = error_line(err, "train")
    assert "diverged" in line and "--lr" in line


def test_auto_means_the_cpu_in_the_ordinary_suite(tmp_path):
    """On a GPU machine too: only tests/test_cuda.py runs on CUDA (conftest.py), in this process and in
    every process a test starts."""
    from rtrl.utils import resolve_device

    assert resolve_device("auto").type == "cpu"
    child = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == "False" and os.environ["CUDA_VISIBLE_DEVICES"] == ""
