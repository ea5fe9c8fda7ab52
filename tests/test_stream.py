"""Stream AC(λ): the traces over the exact RTRL gradient against BPTT's forward view, ObGD's bound,
MemoryChain's definition, and a small run of ``rtrl train --algo stream-ac`` that resumes."""

from __future__ import annotations

import copy
import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import rtrl  # noqa: F401 (registers the gymnasium ids)
from rtrl.cli import main
from rtrl.rl import dists
from rtrl.rl.envs import make_env
from rtrl.rl.policy import StreamPolicy
from rtrl.rl.stream import STREAM_CORES, ObGD, StreamAC, StreamAgent, sparse_init_
from rtrl.rl.stream_q import QAgent, StreamQ
from rtrl.runs import load_checkpoint

GAMMA, LAM = 0.9, 0.8
LENGTHS = (7, 9)  # two episodes: the second checks that state, sensitivities and traces restart


def _episodes(obs_dim: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random observations ``(T, D)`` and rewards ``(T,)`` (``reward[t]``: step ``t``'s) per episode."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(T, obs_dim, generator=g, dtype=torch.float64),
             torch.randn(T, generator=g, dtype=torch.float64)) for T in LENGTHS]


def _backward_view(agent: StreamAgent, episodes, lam: float = LAM):
    """Stream the episodes through :class:`StreamAC` with frozen weights (``lr = 0``); returns
    ``Σ_t δ_t z_t`` for the critic's and the actor's traces (read after each step), and the actions."""
    learner = StreamAC(agent, lr=0.0, discount=GAMMA, lam=lam, entropy_weight=0.0, reward_scale=False)
    sums = [[torch.zeros_like(z) for z in opt.traces] for opt in (learner.critic_opt, learner.actor_opt)]
    actions = []
    nxt = [ep[0][0] for ep in episodes[1:]] + [torch.zeros_like(episodes[0][0][0])]
    learner.begin(episodes[0][0][0])
    for (obs, reward), after in zip(episodes, nxt):
        T, acts = len(obs), []
        for t in range(T):
            acts.append(torch.as_tensor(learner.act()))
            done = t == T - 1
            stats = learner.learn(float(reward[t]), after if done else obs[t + 1], done)
            for acc, opt in zip(sums, (learner.critic_opt, learner.actor_opt)):
                for a, z in zip(acc, opt.traces):
                    a.add_(z, alpha=stats["delta"])
        actions.append(torch.cat(acts))
    return sums, actions


def _forward_view(agent: StreamAgent, episodes, actions):
    """``Σ_t (G^λ_t − V_t) ∇V_t`` and ``Σ_t (G^λ_t − V_t) ∇ log π(a_t)`` by autograd BPTT through each
    whole episode: the cores switched to learning by BPTT, their states never detached."""
    net = copy.deepcopy(agent)
    for core in net.cores:
        core.learning = "bptt"
    loss_v = loss_pi = 0.0
    for (obs, reward), acts in zip(episodes, actions):
        T = len(obs)
        state = net.initial_state(1, learner=False)
        values, logps = [], []
        for t in range(T):
            params, value, state = net.step(obs[t:t + 1], state, torch.tensor([t == 0]))
            values.append(value[0])
            logps.append(dists.log_prob(params, acts[t:t + 1], net.continuous)[0])
        v = torch.stack(values).detach()
        v_next = torch.cat((v[1:], v.new_zeros(1)))  # the episode terminates after its last step
        delta = reward + GAMMA * v_next - v
        adv = torch.zeros_like(v)  # G^λ_t − V_t = Σ_{k≥t} (γλ)^{k−t} δ_k
        running = 0.0
        for t in range(T - 1, -1, -1):
            running = delta[t] + GAMMA * LAM * running
            adv[t] = running
        loss_v = loss_v + (adv * torch.stack(values)).sum()
        loss_pi = loss_pi + (adv * torch.stack(logps)).sum()
    actor_params, critic_params = net.parameter_groups()
    return (torch.autograd.grad(loss_v, critic_params, allow_unused=True, retain_graph=True),
            torch.autograd.grad(loss_pi, actor_params, allow_unused=True))


def _agent(core: str, seed: int = 0, continuous: bool = False) -> StreamAgent:
    torch.manual_seed(seed)
    # half the weights zero, not 90 %: at these small sizes every layer then carries signal
    return StreamAgent((3,), 3 if not continuous else 2, core, hidden_size=8, width=16, obs_norm=False,
                       sparsity=0.5, continuous=continuous).double()


def _compare(core: str, lam: float = LAM, continuous: bool = False) -> list[bool]:
    """For each parameter of the critic, then the actor: does the backward view equal the forward view?"""
    agent = _agent(core, continuous=continuous)
    episodes = _episodes(3, seed=1)
    (sum_v, sum_pi), actions = _backward_view(agent, episodes, lam)
    grad_v, grad_pi = _forward_view(agent, episodes, actions)
    out = []
    for streamed, offline in ((sum_v, grad_v), (sum_pi, grad_pi)):
        assert len(streamed) == len(offline)
        assert all(s.abs().sum() > 0 for s in streamed)  # no parameter's comparison is vacuous
        for s, o in zip(streamed, offline):
            o = torch.zeros_like(s) if o is None else o
            out.append(torch.allclose(s, o, rtol=1e-9, atol=1e-12))
    return out


@pytest.mark.parametrize("core", ["rtrl-rtu", "rtrl-lru", "rtrl-elstm", "rtrl-diag", "none"])
def test_traces_over_exact_rtrl_equal_bptt_forward_view(core):
    assert all(_compare(core))


def test_the_identity_holds_for_a_gaussian_policy():
    assert all(_compare("rtrl-lru", continuous=True))


def test_tbptt_core_misses_the_past():
    # streaming TBPTT(1) detaches the state each step: its recurrent weights' traces differ from BPTT's
    same = _compare("tbptt-rtu")
    assert not all(same)
    assert any(same)  # the layers above the core still get their exact gradients


def test_a_wrong_trace_decay_breaks_the_identity():
    assert not all(_compare("rtrl-rtu", lam=0.5))


def test_obgd_step_matches_its_formula():
    torch.manual_seed(0)
    params = [torch.randn(4, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
    start = [p.clone() for p in params]
    opt = ObGD(params, lr=0.5, discount=0.9, lam=0.8, kappa=2.0)
    g1 = [torch.randn_like(p) for p in params]
    g2 = [torch.randn_like(p) for p in params]
    opt.accumulate(g1)
    opt.accumulate((g2[0], None))  # no gradient for the second: its trace only decays
    z = [0.72 * g1[0] + g2[0], 0.72 * g1[1]]
    l1 = sum(t.abs().sum() for t in z).item()
    assert opt.l1() == pytest.approx(l1, rel=1e-12)
    for delta in (0.1, -3.0, 0.0):
        want = 0.5 / max(1.0, 0.5 * 2.0 * max(abs(delta), 1.0) * l1)
        assert opt.step_size(delta) == pytest.approx(want, rel=1e-12)
    delta = -3.0
    alpha = opt.step(delta)
    assert alpha < 0.5  # the bound is active at these sizes
    for p, p0, zz in zip(params, start, z):
        torch.testing.assert_close(p, p0 + alpha * delta * zz, rtol=1e-12, atol=1e-12)
    small = ObGD([torch.zeros(2, dtype=torch.float64)], lr=0.1, discount=1.0, lam=1.0, kappa=1.0)
    small.accumulate((torch.tensor([1e-3, -1e-3], dtype=torch.float64),))
    assert small.step_size(0.5) == 0.1  # far from overshooting: the plain step size
    assert small.step(float("nan")) == 0.0 and small.params[0].abs().sum() == 0
    assert small.l1() == 0.0  # the traces restart after a step that could not be taken


def test_sparse_init_zeroes_ninety_percent_of_each_row():
    torch.manual_seed(0)
    layer = torch.nn.Linear(20, 7)
    sparse_init_(layer)
    zeros = (layer.weight == 0).sum(1)
    assert (zeros == 18).all()  # ceil(0.9 · 20) per output unit
    assert layer.weight.abs().max() <= math.sqrt(3 / 20) and (layer.bias == 0).all()
    few = torch.nn.Linear(3, 5)
    sparse_init_(few)
    assert ((few.weight != 0).sum(1) == 1).all()  # ceil(0.9 · 3) = 3 would zero the layer: one weight stays


def _play(env, actions):
    out = []
    for a in actions:
        o, r, d = env.step(np.array([a]))
        out.append((o[0].tolist(), float(r[0]), bool(d[0])))
    return out


@pytest.mark.parametrize("length", [1, 5])
def test_memory_chain_is_bsuites(length):
    env = make_env(f"rtrl-MemoryChain{length}-v0", 1)
    first = env.reset(3)[0]
    assert first[0] == 1.0 and first[2] in (-1.0, 1.0)
    bit = int(first[2] > 0)
    steps = _play(env, [0] * length + [bit])  # bsuite's episode: length + 1 actions
    assert [s[1] for s in steps] == [0.0] * length + [1.0]
    assert [s[2] for s in steps] == [False] * length + [True]
    # bsuite's step returns the observation of the step it leaves: obs(0) again, then obs(1) ... obs(L-1)
    shown = [first.tolist()] + [s[0] for s in steps[:-1]]
    for k, o in enumerate(shown):
        t = max(k - 1, 0)
        assert o[0] == pytest.approx(1 - t / length)
        assert o[2] == (first[2] if t == 0 else 0.0)
    new = steps[-1][0]  # auto-reset: the next episode's first observation
    assert new[0] == 1.0 and new[2] in (-1.0, 1.0)
    wrong = _play(env, [0] * length + [1 - int(new[2] > 0)])
    assert wrong[-1][1:] == (-1.0, True)
    assert env.pop_episode_stats() == [(1.0, length + 1), (-1.0, length + 1)]
    g = gym.make(f"rtrl-MemoryChain{length}-v0")
    o, _ = g.reset(seed=0)
    rewards = [g.step(int(o[2] > 0))[1:3] for _ in range(length + 1)]
    assert rewards[-1] == (1.0, True) and all(r == (0.0, False) for r in rewards[:-1])


def test_cli_run_writes_its_folder_and_resumes(tmp_path):
    run = tmp_path / "run"
    base = ["train", "--algo", "stream-ac", "--env", "rtrl-MemoryChain3-v0", "--core", "rtrl-rtu",
            "--run-dir", str(run), "--no-progress", "--eval-episodes", "4"]
    assert main(base + ["--total-frames", "300"]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["frames"] == 300 and result["train_mean_return_last100"] is not None
    assert json.loads((run / "config.json").read_text())["algo"] == "stream-ac"
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["kind"] == "stream-ac" and ckpt["counters"]["frames"] == 300
    learner = ckpt["learner"]
    assert learner["steps"] == 300 and learner["state"][0][1] is not None  # sensitivities are saved
    n_core = sum(k.startswith("cores.") for k in ckpt["agent"])  # the RTU's actor and critic: one fused layer
    n_critic = sum(k.startswith("critic.") for k in ckpt["agent"])
    assert len(learner["critic_opt"]["traces"]) == n_critic + n_core
    assert main(base + ["--total-frames", "500", "--resume"]) == 0
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["counters"]["frames"] == 500 and ckpt["counters"]["restarts"] == 1
    assert ckpt["learner"]["steps"] == 500  # the learner's own counter went on from the checkpoint
    assert main(["eval", str(run), "--episodes", "3"]) == 0
    assert json.loads((run / "eval.json").read_text())["episodes"] == 3
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    assert (run / "policy.pt").is_file() and json.loads((run / "policy.pt.json").read_text())["core"] == "rtrl-rtu"
    from rtrl.api import evaluate, load_agent

    policy = load_agent(run)
    assert isinstance(policy, StreamPolicy) and len(evaluate(policy, env="rtrl-MemoryChain3-v0", episodes=3)["returns"]) == 3
    action, state = policy.act(np.ones((2, 3), np.float32), policy.initial_state(2))
    assert action.shape == (2,) and state.shape == (2, policy.state_size)


def test_a_fused_rtu_keeps_actor_and_critic_apart():
    agent = _agent("rtrl-rtu")
    assert agent.fused and len(agent.cores) == 1
    learner = StreamAC(agent, lr=0.5, discount=GAMMA, lam=LAM, reward_scale=False)
    before = {n: p.detach().clone() for n, p in agent.cores.named_parameters()}
    obs, reward = _episodes(3, seed=2)[0]
    learner.begin(obs[0])
    for t in range(len(obs) - 1):
        learner.act()
        learner.learn(float(reward[t]), obs[t + 1], False)
    halves = agent.actor_units()
    for opt, own in ((learner.actor_opt, 1.0), (learner.critic_opt, 0.0)):
        for p, z in zip(opt.params, opt.traces):
            if id(p) in halves:  # a network's trace is zero on the other network's units, nonzero on its own
                other = halves[id(p)] != own
                assert (z[other] == 0).all() and z[~other].abs().sum() > 0
    for n, p in agent.cores.named_parameters():
        assert not torch.equal(p, before[n])  # both halves learned


@pytest.mark.parametrize("truncated", [False, True])
def test_a_time_limit_bootstraps_from_the_final_observation_and_a_termination_does_not(truncated):
    agent = _agent("rtrl-rtu")
    (obs, reward), (other, _) = _episodes(3, seed=3)
    final = obs[1]
    with torch.no_grad():  # the expectation, by hand: V_0, and V(final obs) with the state carried on
        _, v0, state = agent.step(obs[:1], agent.initial_state(1), torch.tensor([True]))
        v_final = agent.value(final[None], state, torch.tensor([False]))
    learner = StreamAC(agent, lr=0.0, discount=GAMMA, lam=LAM, reward_scale=False)
    learner.begin(obs[0])
    learner.act()
    stats = learner.learn(float(reward[0]), other[0], True, truncated, final.numpy()[None])
    want = reward[0] + (GAMMA * v_final[0] if truncated else 0.0) - v0[0]
    assert stats["delta"] == pytest.approx(float(want), rel=1e-12, abs=1e-12)
    assert bool(learner.first)  # the next observation starts an episode: state and traces restart there


def test_a_non_finite_observation_stops_with_one_line():
    learner = StreamAC(_agent("rtrl-rtu"), reward_scale=False)
    learner.begin(torch.zeros(3))
    learner.act()
    with pytest.raises(ValueError, match="NaN or Inf"):
        learner.learn(0.0, torch.tensor([0.0, float("nan"), 0.0]), False)


def _q_views(core: str) -> list[bool]:
    """Stream Q(λ), greedy (ε = 0, so no trace is cut) with frozen weights: does Σ_t δ_t z_t equal
    Σ_t (G^λ_t − Q_t(a_t)) ∇Q_t(a_t) by BPTT through whole episodes, parameter by parameter?"""
    torch.manual_seed(0)
    agent = QAgent((3,), 3, core, hidden_size=8, width=16, obs_norm=False, sparsity=0.5).double()
    episodes = _episodes(3, seed=4)
    learner = StreamQ(agent, lr=0.0, discount=GAMMA, lam=LAM, reward_scale=False)
    sums = [torch.zeros_like(z) for z in learner.opt.traces]
    actions = []
    learner.begin(episodes[0][0][0])
    nxt = [ep[0][0] for ep in episodes[1:]] + [torch.zeros(3, dtype=torch.float64)]
    for (obs, reward), after in zip(episodes, nxt):
        acts = []
        for t in range(len(obs)):
            acts.append(int(learner.act()[0]))
            done = t == len(obs) - 1
            delta = learner.learn(float(reward[t]), after if done else obs[t + 1], done)["delta"]
            for acc, z in zip(sums, learner.opt.traces):
                acc.add_(z, alpha=delta)
        actions.append(acts)
    net = copy.deepcopy(agent)
    net.core.learning = "bptt"
    loss = 0.0
    for (obs, reward), acts in zip(episodes, actions):
        state, qs = net.initial_state(1, learner=False), []
        for t in range(len(obs)):
            q, state = net.step(obs[t:t + 1], state, torch.tensor([t == 0]))
            qs.append(q[0])
        q_all = torch.stack(qs)
        q_taken = q_all[torch.arange(len(obs)), torch.tensor(acts)]
        boot = torch.cat((q_all[1:].detach().max(-1).values, q_all.new_zeros(1)))
        delta = reward + GAMMA * boot - q_taken.detach()
        adv, running = torch.zeros_like(delta), 0.0
        for t in range(len(obs) - 1, -1, -1):
            running = delta[t] + GAMMA * LAM * running
            adv[t] = running
        loss = loss + (adv * q_taken).sum()
    grads = torch.autograd.grad(loss, list(net.core.parameters()) + list(net.q.parameters()))
    assert all(s.abs().sum() > 0 for s in sums)
    return [torch.allclose(s, g, rtol=1e-9, atol=1e-12) for s, g in zip(sums, grads)]


def test_stream_q_trace_over_exact_rtrl_equals_bptt_forward_view():
    assert all(_q_views("rtrl-rtu"))
    same = _q_views("tbptt-rtu")
    assert not all(same) and any(same)


def test_stream_q_cuts_the_trace_at_an_exploratory_action():
    torch.manual_seed(0)
    agent = QAgent((3,), 3, "rtrl-rtu", hidden_size=8, width=16, obs_norm=False, sparsity=0.5).double()
    learner = StreamQ(agent, lr=0.0, reward_scale=False, explore_steps=10**9)  # ε ≈ 1: random actions
    obs = torch.randn(40, 3, dtype=torch.float64)
    learner.begin(obs[0])
    cuts = 0
    for t in range(39):
        greedy = int(agent.step(learner.x, learner.state, learner.first)[0].argmax())
        action = int(learner.act()[0])
        g = torch.autograd.grad(learner._pending, learner.params, retain_graph=True)
        learner.learn(0.0, obs[t + 1], False)
        if action != greedy and t > 0:  # the trace is this step's gradient alone
            cuts += 1
            assert all(torch.allclose(z, gi) for z, gi in zip(learner.opt.traces, g))
    assert cuts > 5


def test_stream_q_cli_run_resumes_and_evaluates(tmp_path):
    run = tmp_path / "q"
    base = ["train", "--algo", "stream-q", "--env", "rtrl-MemoryChain3-v0", "--run-dir", str(run),
            "--no-progress", "--eval-episodes", "3"]
    assert main(base + ["--total-frames", "200"]) == 0
    assert json.loads((run / "result.json").read_text())["algo"] == "stream-q"
    assert main(base + ["--total-frames", "300", "--resume"]) == 0
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["kind"] == "stream-q" and ckpt["learner"]["steps"] == 300
    assert main(["train", "--algo", "stream-q", "--env", "Pendulum-v1", "--run-dir", str(tmp_path / "p"),
                 "--total-frames", "10", "--no-progress"]) == 2  # Box actions: one line, use stream-ac


def _max_abs_lambda(module: torch.nn.Module) -> float:
    """The largest |λ| = exp(−exp(ν)) over the ring cells (LRU, RTU) in ``module``."""
    from rtrl.cells.lru import LRUCell

    cells = [m for m in module.modules() if isinstance(m, LRUCell)]
    assert cells
    return max(float(torch.exp(-torch.exp(c.weight_hh[0])).max()) for c in cells)


def test_r_max_sets_the_ring_init_of_every_agent_and_is_refused_for_a_core_without_one():
    import dataclasses

    from rtrl.rl.config import PRESETS, EnvSpec, TrainConfig, build_agent

    spec = EnvSpec.of(make_env("rtrl-MemoryChain8-v0", 1))
    torch.manual_seed(0)
    for algo, core in (("stream-ac", "rtrl-rtu"), ("stream-ac", "rtrl-lru"), ("stream-q", "tbptt-rtu"),
                       ("ppo", "rtrl-rtu")):
        base = PRESETS["stream"] if algo.startswith("stream") else PRESETS["ppo-vector"]
        wide = build_agent(dataclasses.replace(base, algo=algo, core=core, hidden_size=64), spec)
        narrow = build_agent(dataclasses.replace(base, algo=algo, core=core, hidden_size=64, r_max=0.5), spec)
        assert _max_abs_lambda(wide) > 0.9  # of 32+ units on the unit disc, one lies beyond 0.9 (p > 0.99)
        assert _max_abs_lambda(narrow) <= 0.5 + 1e-6
    with pytest.raises(ValueError, match="--r-max"):
        TrainConfig(core="rtrl-elstm", r_max=0.5).validate()
    with pytest.raises(ValueError, match="r_max must be in"):
        TrainConfig(core="rtrl-rtu", r_max=1.5).validate()


def test_stream_agents_take_the_forget_bias():
    """The eLSTM's forget bias reaches the streaming agents' cores (it was once dropped silently)."""
    a, b = StreamAgent((3,), 2, "rtrl-elstm", 8, 16), StreamAgent((3,), 2, "rtrl-elstm", 8, 16, forget_bias=2.0)
    qa, qb = QAgent((3,), 2, "rtrl-elstm", 8, 16), QAgent((3,), 2, "rtrl-elstm", 8, 16, forget_bias=2.0)
    for x, y in ((a, b), (qa, qb)):
        bx = [p for n, p in x.named_parameters() if n.endswith("bias") and "core" in n]
        by = [p for n, p in y.named_parameters() if n.endswith("bias") and "core" in n]
        assert sum(float(p.sum()) for p in by) > sum(float(p.sum()) for p in bx)


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("core", STREAM_CORES)
def test_stream_policy_step_is_the_agents_step_for_every_core(core, continuous):
    # the exported step (rtrl.rl.policy.StreamPolicy: real (re, im) pairs, one state tensor) must give
    # the agent's policy parameters, values and states, through resets, with the normaliser applied
    torch.manual_seed(0)
    agent = StreamAgent((3,), 2, core, hidden_size=6, width=8, continuous=continuous)
    agent.obs_rms.update(torch.randn(50, 3) * 3 + 1)
    low, high = [-2.0, 0.0], [2.0, 1.0]
    policy = StreamPolicy(agent, low, high)
    B = 4
    state, s = agent.initial_state(B, learner=False), policy.initial_state(B)
    first = torch.ones(B, dtype=torch.bool)
    for t in range(20):
        obs = torch.randn(B, 3) * 3 + 1
        with torch.no_grad():
            params, value, state = agent.step(agent.normalise(obs), state, first)
        a, v, p, s = policy(obs, torch.zeros(B), first.float(), s)
        torch.testing.assert_close(p, params, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(v, value, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(s, policy.real_state(state), atol=1e-5, rtol=1e-4)
        if continuous:  # the Gaussian's mean, clipped to [-1, 1], mapped onto [low, high]
            mean = params[:, :2].clamp(-1, 1)
            torch.testing.assert_close(a, torch.tensor(low) + (mean + 1) / 2 * (torch.tensor(high) - torch.tensor(low)))
        else:
            assert torch.equal(a, params.argmax(-1))
        first = torch.rand(B) < 0.2


@pytest.mark.parametrize("core", STREAM_CORES)
def test_stream_q_policy_acts_greedily_on_its_q_values(core):
    torch.manual_seed(0)
    agent = QAgent((3,), 4, core, hidden_size=6, width=8)
    policy = StreamPolicy(agent)
    B = 3
    state, s = agent.initial_state(B, learner=False), policy.initial_state(B)
    first = torch.ones(B, dtype=torch.bool)
    for t in range(15):
        obs = torch.randn(B, 3)
        action, q, state = agent.act(obs, torch.zeros(B), first, state, greedy=True)
        a, v, p, s = policy(obs, torch.zeros(B), first.float(), s)
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(s, policy.real_state(state), atol=1e-5, rtol=1e-4)
        assert torch.equal(a, action) and torch.allclose(v, q.max(-1).values)
        first = torch.rand(B) < 0.3


def test_stream_q_policy_samples_epsilon_greedy():
    # act(greedy=False) of a Q(λ) policy: the greedy action but on ε = 0.01 of the draws
    torch.manual_seed(0)
    policy = StreamPolicy(QAgent((3,), 5, "none", width=8))
    q = torch.tensor([[0.0, 3.0, 1.0, 0.0, 0.0]]).expand(20000, 5)
    off = (policy.sample(q) != 1).float().mean().item()
    assert 0.004 < off < 0.016  # ε · 4/5 = 0.008 of the draws leave the greedy action


@pytest.mark.parametrize("algo, core", [("stream-ac", "rtrl-rtu"), ("stream-ac", "rtrl-lru"), ("stream-q", "rtrl-elstm")])
def test_stream_onnx_round_trip_over_memory_chain_episodes(tmp_path, algo, core):
    # a trained streaming run exported by `rtrl export`, run in onnxruntime and TorchScript beside the
    # agent that was trained (its own step, not the exported module), over episodes with resets
    ort = pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    assert main(["train", "--algo", algo, "--env", "rtrl-MemoryChain3-v0", "--core", core, "--total-frames", "200",
                 "--eval-episodes", "0", "--run-dir", str(run), "--no-progress"]) == 0
    assert main(["export", str(run), "--format", "onnx"]) == 0
    assert main(["export", str(run), "--format", "torchscript"]) == 0
    session, scripted = ort.InferenceSession(str(run / "policy.onnx")), torch.jit.load(str(run / "policy.pt"))
    from rtrl.rl.config import TrainConfig, build_agent

    vec = make_env("rtrl-MemoryChain3-v0", 3)
    agent = build_agent(TrainConfig(**json.loads((run / "config.json").read_text())), vec)
    agent.load_state_dict(load_checkpoint(run / "checkpoints" / "latest.pt")["agent"])
    obs, first = vec.reset(5), np.ones(3, np.float32)
    state = agent.initial_state(3, learner=False)
    meta = json.loads((run / "policy.onnx.json").read_text())
    assert meta["inputs"] == ["obs", "first", "state"]  # the streaming networks read no reward: ONNX drops it
    s_onnx = np.zeros((3, meta["state_size"]), np.float32)
    s_ts, resets = torch.as_tensor(s_onnx), 0
    for t in range(24):
        with torch.no_grad():
            want, params, state = agent.act(torch.as_tensor(obs), torch.zeros(3), torch.as_tensor(first > 0), state,
                                            greedy=True)
        inputs = dict(obs=obs, prev_reward=np.zeros(3, np.float32), first=first, state=s_onnx)
        action, _, p, s_onnx = session.run(None, {k: inputs[k] for k in meta["inputs"]})
        ts_action, _, _, s_ts = scripted(*(torch.as_tensor(inputs[k]) for k in ("obs", "prev_reward", "first")), s_ts)
        np.testing.assert_array_equal(action, want.numpy())
        np.testing.assert_array_equal(ts_action.numpy(), want.numpy())
        np.testing.assert_allclose(p, params.numpy(), atol=1e-5, rtol=1e-4)
        obs, _, done = vec.step(want.numpy())
        first = done.astype(np.float32)
        resets += int(done.sum())
    assert resets >= 12  # episodes of 4 steps: the state is reset again and again
