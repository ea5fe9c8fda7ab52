"""The standard PPO machinery, each piece against its formula or its reference implementation:
running statistics (gymnasium's ``RunningMeanStd``), observation normalisation, reward scaling by
the std of the discounted return, orthogonal init, the separate critic, minibatches of transitions,
and the normaliser's statistics travelling with the agent (checkpoint, ``load_agent``, export)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rtrl.rl.agent import Agent
from rtrl.rl.config import TrainConfig, build_agent
from rtrl.rl.envs import make_env
from rtrl.rl.normalize import ObsNormalizer, RewardScaler, RunningMeanStd
from rtrl.rl.policy import Policy
from rtrl.rl.ppo import PPO, Collector

gym = pytest.importorskip("gymnasium")


def test_running_statistics_match_gymnasiums_running_mean_std():
    from gymnasium.wrappers.utils import RunningMeanStd as GymRMS

    rng = np.random.default_rng(0)
    ours, ref = RunningMeanStd((3,)), GymRMS(shape=(3,))
    for n in (1, 7, 50, 2):  # uneven batches, one of a single row
        x = rng.normal(2.0, 3.0, size=(n, 3))
        ours.update(torch.as_tensor(x))
        ref.update(x)
    np.testing.assert_allclose(ours.mean.numpy(), ref.mean, rtol=1e-12)
    np.testing.assert_allclose(ours.var.numpy(), ref.var, rtol=1e-12)
    assert math.isclose(ours.count.item(), ref.count, rel_tol=1e-15)
    # and the closed form: a prior of 1e-4 pseudo-rows of mean 0, variance 1, pooled with every row
    ours2, xs = RunningMeanStd(()), rng.normal(-1.0, 0.5, size=40)
    for chunk in np.split(xs, [3, 20]):
        ours2.update(torch.as_tensor(chunk))
    eps, n = 1e-4, len(xs)
    mean = xs.sum() / (eps + n)
    var = (eps * (1 + mean**2) + ((xs - mean) ** 2).sum()) / (eps + n)
    assert math.isclose(ours2.mean.item(), mean, rel_tol=1e-10)
    assert math.isclose(ours2.var.item(), var, rel_tol=1e-10)


def test_observation_normaliser_is_the_clipped_standard_score():
    norm = ObsNormalizer((2,))
    norm.update(torch.tensor([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]]))
    obs = torch.tensor([[1.0, 10.0], [100.0, 11.0]])
    want = (obs.double() - norm.mean) / torch.sqrt(norm.var + 1e-8)
    got = norm(obs)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want.clamp(-10, 10).float())
    assert got[1, 0] == 10.0 and got[1, 1] == 10.0  # far outside: clipped (the second column has ~0 variance)


def test_reward_scaler_divides_by_the_running_std_of_the_discounted_return():
    rng = np.random.default_rng(1)
    T, B, gamma = 9, 3, 0.9
    reward = torch.as_tensor(rng.normal(size=(T + 1, B)) * 5)
    done = torch.as_tensor(rng.random((T + 1, B)) < 0.25)
    scaler = RewardScaler(B)
    got = scaler(reward, done, gamma)
    # the formula, written out: G <- gamma G + r; fold every stream's G into the variance; r / sqrt(var + eps)
    ref, G = RunningMeanStd(()), np.zeros(B)
    want = reward.clone()
    for t in range(1, T + 1):
        G = gamma * G + reward[t].numpy()
        ref.update(torch.as_tensor(G))
        want[t] = torch.clamp(reward[t] / math.sqrt(ref.var.item() + 1e-8), -10, 10)
        G[done[t].numpy()] = 0.0
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    assert torch.equal(got[0], reward[0])  # the previous segment's reward is left alone
    np.testing.assert_allclose(scaler.returns.numpy(), G, rtol=1e-12)
    with pytest.raises(ValueError, match="set up for 3 envs"):
        scaler(reward[:, :2], done[:, :2], gamma)
    # a segment whose row 0 starts an episode (an actor restarted mid-episode) starts from G = 0
    scaler.returns.fill_(50.0)
    first = torch.tensor([[True, False, False], [False, False, False]])
    scaler(torch.ones(2, 3, dtype=torch.float64), first, gamma)
    np.testing.assert_allclose(scaler.returns.numpy(), [1.0, 46.0, 46.0])


def test_agent_normalises_what_its_stems_read_and_the_policy_export_does_too():
    torch.manual_seed(0)
    agent = Agent((3,), 2, core="rtrl-lru", hidden_size=4, encoder_width=5, obs_norm=True, critic="separate")
    agent.update_obs_stats(torch.randn(50, 3) * 4 + 7)
    obs, r, first = torch.randn(4, 3) * 4 + 7, torch.randn(4), torch.tensor([True, False, True, False])
    x = agent.core_input(obs, r, first)
    normed = agent.obs_rms(obs)
    assert normed.abs().max() < 5  # the raw observations are ~7 +- 4: normalising moved them
    r_in = r.clamp(-1, 1).masked_fill(first, 0)[:, None]
    torch.testing.assert_close(x, torch.cat((agent.stem(normed), r_in, agent.critic_stem(normed), r_in), -1))
    policy = Policy(agent)
    state = agent.initial_state(4, learner=False)
    _, logits, state = agent.act(obs, r, first, state)
    _, _, params, s = policy(obs, r, first.float(), policy.initial_state(4))
    torch.testing.assert_close(params, logits)
    torch.testing.assert_close(s, policy.real_state(state))


def test_orthogonal_init_uses_the_usual_gains():
    torch.manual_seed(0)
    agent = Agent((6,), 3, core="none", encoder_width=16, init="orthogonal", critic="separate", activation="tanh")
    layers = [(agent.stem.net[0], 2.0), (agent.stem.net[2], 2.0), (agent.critic_stem.net[2], 2.0),
              (agent.policy, 0.01**2), (agent.value, 1.0)]
    for layer, gain2 in layers:
        w = layer.weight.detach()
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # orthonormal rows or columns, times the gain
        torch.testing.assert_close(gram, gain2 * torch.eye(min(w.shape)), atol=1e-5, rtol=1e-5)
        assert layer.bias.abs().max() == 0
    assert isinstance(agent.stem.net[1], torch.nn.Tanh)


def test_separate_critic_has_its_own_trunk():
    torch.manual_seed(0)
    agent = Agent((3,), 2, core="rtrl-rtu", hidden_size=6, encoder_width=5, critic="separate")
    obs, r, d = torch.randn(5, 2, 3), torch.randn(5, 2), torch.zeros(5, 2, dtype=torch.bool)
    logits, values, _ = agent(obs, r, d, agent.initial_state(2))
    (values.sum()).backward()
    actor_side = [p for n, p in agent.named_parameters() if n.startswith(("stem.", "core.actor.", "policy."))]
    critic_side = [p for n, p in agent.named_parameters() if n.startswith(("critic_stem.", "core.critic.", "value."))]
    assert actor_side and critic_side
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in actor_side)  # the value never reaches the actor
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in critic_side)
    with pytest.raises(ValueError, match="critic separate is not supported with the uoro-lstm"):
        Agent((3,), 2, core="uoro-lstm", critic="separate")
    with pytest.raises(ValueError, match="pixels are scaled"):
        Agent((3, 16, 16), 2, core="none", obs_norm=True)


def test_stateless_minibatches_of_transitions_give_the_segments_loss():
    # a feedforward agent learns from single transitions, shuffled: the loss over all of them at once
    # equals the loss over the segment (the same steps, laid out (1, T*B) instead of (T, B))
    torch.manual_seed(0)
    cfg = TrainConfig(algo="ppo", env="CartPole-v1", core="none", num_envs=4, unroll=6, optimizer="adam",
                      ppo_minibatches=3, obs_norm=True, reward_scale=True, reward_clip=10.0)
    cfg.validate()
    env = make_env(cfg.env, cfg.num_envs)
    agent = build_agent(cfg, env).double()
    seg, _ = Collector(env, agent, cfg.unroll, seed=0).collect()
    env.close()
    ppo = PPO(agent, cfg)
    adv, ret = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    flat = seg.transitions()
    assert flat.obs.shape == (1, 24, 4) and flat.action.shape == (1, 24)
    a, _ = ppo.loss(seg, adv, ret)
    b, _ = ppo.loss(flat, adv.reshape(1, -1), ret.reshape(1, -1))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="must divide num_envs x unroll"):
        TrainConfig(algo="ppo", core="none", num_envs=4, unroll=5, ppo_minibatches=3).validate()


def test_ppo_updates_the_statistics_after_its_epochs_and_checkpoints_them(tmp_path):
    from rtrl.api import load_agent, train

    run = tmp_path / "run"
    train(TrainConfig(algo="ppo", env="CartPole-v1", core="rtrl-lru", hidden_size=6, num_envs=4, unroll=8,
                      ppo_minibatches=2, optimizer="adam", lr=1e-3, obs_norm=True, reward_scale=True,
                      reward_clip=10.0, critic="separate", total_frames=96, eval_episodes=0, seed=2),
          run_dir=run, progress=False)
    ckpt = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["agent"]["obs_rms.count"].item() == pytest.approx(96 + 1e-4)  # every rollout's steps, once
    assert ckpt["ppo"]["reward_scaler"]["rms.count"].item() == pytest.approx(3 * 8 * 4 + 1e-4)
    policy = load_agent(run)
    torch.testing.assert_close(policy.agent.obs_rms.mean, ckpt["agent"]["obs_rms.mean"])
    assert policy.agent.obs_rms.var.min() < 0.5  # CartPole's first steps: small variances, kept as learned
