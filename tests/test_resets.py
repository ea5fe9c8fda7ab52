"""The reset rule end to end: at an episode's first step nothing of the previous episode reaches the agent.

For each path that runs the agent (R2AC's actors and learner, PPO's collector and update, evaluation)
we play the same environment twice with different sampled actions in the first episode, so the first
episode's actions, rewards and the core's state differ, and compare the outputs at the second
episode's first step exactly. The outputs are read with a forward hook on the policy head (the real
code path, nothing replaced).
"""

from __future__ import annotations

import pytest
import torch

from rtrl.rl.actors import ActorLoop
from rtrl.rl.agent import CORES, WHOLE_EPISODE_CORES
from rtrl.rl.envs import make_env
from rtrl.rl.learner import Learner
from rtrl.rl.ppo import PPO, Collector
from rtrl.rl.runbook import evaluate
from rtrl.rl.train import TrainConfig, build_agent

ENV, B = "rtrl-Recall-v0", 4  # delay 3: every episode is 5 steps, so step 5 starts the second one
FIRST_OF_SECOND = 5
CORES_WITH_STATE = [c for c in CORES if c not in WHOLE_EPISODE_CORES]  # those: below, with M = one episode


def _agent(core: str, algo: str = "impala", unroll: int = 8):
    cfg = TrainConfig(algo=algo, env=ENV, core=core, hidden_size=8, encoder_width=8, num_envs=B, unroll=unroll,
                      ppo_minibatches=1, lr=1e-2)
    cfg.validate()
    torch.manual_seed(0)
    env = make_env(ENV, B, seed=5)
    return cfg, env, build_agent(cfg, env)


def _record(agent) -> list[torch.Tensor]:
    calls: list[torch.Tensor] = []
    agent.policy.register_forward_hook(lambda m, i, out: calls.append(out.detach().clone()))
    return calls


def _two_histories(run) -> tuple:
    """``run(sample_seed)`` -> (per-step logits at the second episode's first step, first-episode rewards)
    for two sampling seeds whose first episodes end differently."""
    a, ra = run(1)
    b, rb = run(2)
    assert not torch.equal(ra, rb), "the two first episodes must end differently for the test to mean anything"
    return a, b


@pytest.mark.parametrize("core", CORES_WITH_STATE)
def test_r2ac_actor_and_learner_forget_the_previous_episode(core):
    def run(sample_seed):
        cfg, env, agent = _agent(core)
        calls = _record(agent)
        loop = ActorLoop(env, agent, cfg.unroll, 0, seed=5)
        torch.manual_seed(sample_seed)
        rollout, _ = loop.rollout()
        env.close()
        actor_logits = torch.stack([c[0] for c in calls[:cfg.unroll]])  # one act call per step
        learner = Learner(agent, cfg.learner_config(), B)
        calls.clear()
        learner.backward(rollout)
        learner_logits = calls[0]  # the segment's forward (then the bootstrap's)
        return (actor_logits[FIRST_OF_SECOND], learner_logits[FIRST_OF_SECOND]), rollout.reward[FIRST_OF_SECOND]

    (actor_a, learner_a), (actor_b, learner_b) = _two_histories(run)
    assert torch.equal(actor_a, actor_b)
    assert torch.equal(learner_a, learner_b)


@pytest.mark.parametrize("core", WHOLE_EPISODE_CORES)
def test_whole_episode_learner_forgets_the_previous_episode(core):
    def run(sample_seed):
        cfg, env, agent = _agent(core, unroll=5)
        calls = _record(agent)
        loop = ActorLoop(env, agent, cfg.unroll, 0, seed=5)
        torch.manual_seed(sample_seed)
        first, _ = loop.rollout()
        second, _ = loop.rollout()  # exactly the second episode
        env.close()
        calls.clear()
        Learner(agent, cfg.learner_config(), B).backward(second)
        return calls[0][0], second.reward[0]

    a, b = _two_histories(run)
    assert torch.equal(a, b)


@pytest.mark.parametrize("core", CORES_WITH_STATE)
def test_ppo_collector_and_update_forget_the_previous_episode(core):
    def run(sample_seed):
        cfg, env, agent = _agent(core, algo="ppo")
        calls = _record(agent)
        collector = Collector(env, agent, cfg.unroll, seed=5)
        torch.manual_seed(sample_seed)
        seg, _ = collector.collect()
        env.close()
        collected = calls[FIRST_OF_SECOND][0]  # one forward per step
        calls.clear()
        torch.manual_seed(0)  # the same shuffle of envs into minibatches
        PPO(agent, cfg).update(seg)
        updated = calls[0][FIRST_OF_SECOND] if core != "none" else _steps_of(calls[0][0], FIRST_OF_SECOND)
        return (collected, updated), seg.reward[FIRST_OF_SECOND]

    (col_a, upd_a), (col_b, upd_b) = _two_histories(run)
    assert torch.equal(col_a, col_b)
    assert torch.equal(upd_a, upd_b)


def _steps_of(shuffled: torch.Tensor, t: int) -> torch.Tensor:
    """A feedforward agent's update reads single transitions ``(T·B, ...)``, shuffled by the first
    ``randperm`` after ``torch.manual_seed(0)``: the rows of step ``t`` (transition ``t·B + b``)."""
    torch.manual_seed(0)
    perm = torch.randperm(shuffled.shape[0])
    return shuffled[perm // B == t]


@pytest.mark.parametrize("core", ["rtrl-elstm", "rtrl-lru", "lstm", "none"])
def test_evaluation_forgets_the_previous_episode(core):
    def run(sample_seed):
        _, env, agent = _agent(core)
        env.close()
        calls = _record(agent)
        torch.manual_seed(sample_seed)
        returns = evaluate(agent, ENV, episodes=2 * B, seed=7, greedy=False, num_envs=B)  # one act call a step
        return calls[FIRST_OF_SECOND][0], torch.tensor(returns[:B])

    a, b = _two_histories(run)
    assert torch.equal(a, b)
