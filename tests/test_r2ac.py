"""R2AC pieces: V-trace against its formula, the learner's exact RTRL across segments and streams."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from rtrl.state import RecurrentState
from rtrl.rl.agent import CORES, WHOLE_EPISODE_CORES, Agent
from rtrl.rl.learner import Learner, LearnerConfig, NonFiniteError, Rollout
from rtrl.rl.normalize import RunningMeanStd
from rtrl.rl.vtrace import actor_critic_loss, vtrace


def test_vtrace_matches_the_formula():
    torch.manual_seed(0)
    T, B = 7, 3
    log_rhos = torch.randn(T, B, dtype=torch.float64)
    discounts = 0.9 * (torch.rand(T, B) > 0.2).double()
    rewards, values = torch.randn(T, B, dtype=torch.float64), torch.randn(T, B, dtype=torch.float64)
    boot = torch.randn(B, dtype=torch.float64)
    got = vtrace(log_rhos, discounts, rewards, values, boot, rho_bar=1.0, c_bar=1.0)
    rho = log_rhos.exp().clamp(max=1.0)
    c = log_rhos.exp().clamp(max=1.0)
    v_next = torch.cat((values[1:], boot[None]))
    # v_s = V(x_s) + Σ_{t≥s} (Π_{i<t} γ_i) (Π_{s≤i<t} c_i) ρ_t (r_t + γ_t V(x_{t+1}) − V(x_t))
    vs = torch.empty_like(values)
    for s in range(T):
        total = values[s].clone()
        for t in range(s, T):
            weight = torch.ones(B, dtype=torch.float64)
            for i in range(s, t):
                weight = weight * discounts[i] * c[i]
            total += weight * rho[t] * (rewards[t] + discounts[t] * v_next[t] - values[t])
        vs[s] = total
    assert torch.allclose(got.vs, vs, atol=1e-12)
    vs_next = torch.cat((vs[1:], boot[None]))
    assert torch.allclose(got.pg_advantages, rho * (rewards + discounts * vs_next - values), atol=1e-12)
    # on-policy with no discounting cut, v_s is the n-step return
    on = vtrace(torch.zeros(T, B, dtype=torch.float64), torch.ones(T, B, dtype=torch.float64), rewards, values, boot)
    assert torch.allclose(on.vs[0], rewards.sum(0) + boot, atol=1e-12)


def vtrace_ground_truth(log_rhos, discounts, rewards, values, bootstrap_value, rho_bar, c_bar):
    """V-trace as the paper writes it, one sum per target, in plain Python floats:

    v_s = V(x_s) + Σ_{t≥s} (Π_{s≤i<t} γ_i c_i) ρ_t (r_t + γ_t V(x_{t+1}) − V(x_t)),
    ρ_t = min(ρ̄, π/μ), c_i = min(c̄, π/μ);  A_s = ρ_s (r_s + γ_s v_{s+1} − V(x_s)) (our policy
    gradient clips at ρ̄ too: the reference implementation has a third threshold for it)."""
    T, B = len(values), len(values[0])
    vs, adv = [[0.0] * B for _ in range(T)], [[0.0] * B for _ in range(T)]
    for b in range(B):
        rho = [min(rho_bar, math.exp(log_rhos[t][b])) for t in range(T)]
        c = [min(c_bar, math.exp(log_rhos[t][b])) for t in range(T)]
        v_next = [values[t + 1][b] for t in range(T - 1)] + [bootstrap_value[b]]
        for s in range(T):
            total, weight = values[s][b], 1.0
            for t in range(s, T):
                total += weight * rho[t] * (rewards[t][b] + discounts[t][b] * v_next[t] - values[t][b])
                weight *= discounts[t][b] * c[t]
            vs[s][b] = total
        for s in range(T):
            vs_next = vs[s + 1][b] if s + 1 < T else bootstrap_value[b]
            adv[s][b] = rho[s] * (rewards[s][b] + discounts[s][b] * vs_next - values[s][b])
    return torch.tensor(vs, dtype=torch.float64), torch.tensor(adv, dtype=torch.float64)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("rho_bar, c_bar", [(3.7, 1.0), (2.2, 0.5)])
def test_vtrace_matches_the_reference_implementations_test_with_rho_bar_not_c_bar(batch, rho_bar, c_bar):
    """The inputs of DeepMind's scalable_agent ``vtrace_test.py``: ``T = 5``, ratios spread from
    ~0.08 to ~12 (log ρ evenly in [−2.5, 2.5)), discounts 0.9/(b+1), rewards 0, 1, 2, ...,
    values (0, 1, 2, ...)/B, bootstrap 1, 2, ...; its ρ̄ = 3.7 (with c̄ = 1), and ρ̄ = 2.2 with
    c̄ = 0.5. Every ratio clip is active somewhere: above ρ̄, between c̄ and ρ̄, below both."""
    T = 5
    arange = torch.arange(T * batch, dtype=torch.float64).view(T, batch)
    log_rhos = 5 * (arange / (T * batch) - 0.5)
    discounts = torch.tensor([[0.9 / (b + 1) for b in range(batch)]] * T, dtype=torch.float64)
    rewards, values = arange, arange / batch
    bootstrap = torch.arange(batch, dtype=torch.float64) + 1.0
    rhos = log_rhos.exp()
    assert (rhos > rho_bar).any() and ((rhos > c_bar) & (rhos < rho_bar)).any() and (rhos < c_bar).any()
    got = vtrace(log_rhos, discounts, rewards, values, bootstrap, rho_bar=rho_bar, c_bar=c_bar)
    vs, adv = vtrace_ground_truth(log_rhos.tolist(), discounts.tolist(), rewards.tolist(), values.tolist(),
                                  bootstrap.tolist(), rho_bar, c_bar)
    assert torch.allclose(got.vs, vs, rtol=1e-12, atol=1e-12)
    assert torch.allclose(got.pg_advantages, adv, rtol=1e-12, atol=1e-12)
    # the same inputs in float32 (the learner's dtype) agree to float32's precision
    got32 = vtrace(*(t.float() for t in (log_rhos, discounts, rewards, values, bootstrap)), rho_bar=rho_bar,
                   c_bar=c_bar)
    assert torch.allclose(got32.vs.double(), vs, rtol=1e-5, atol=1e-5)
    assert torch.allclose(got32.pg_advantages.double(), adv, rtol=1e-5, atol=1e-5)


def gaussian_log_density(params: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """log N(a; mean, diag σ²) summed over the action's dimensions; ``params = [mean; log σ]``."""
    mean, log_std = params.chunk(2, -1)
    return (-0.5 * ((a - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


@pytest.mark.parametrize("continuous", [False, True])
def test_actor_critic_loss_matches_its_formula(continuous):
    """IMPALA's loss, summed over time and batch: ``−Σ log π(a_t) A_t + w_v ½ Σ (v_t − V(x_t))²
    − w_e Σ_t H(π_t)``, with the V-trace targets (ρ̄ = c̄ = 1) from ``log π(a) − log μ(a)`` taken as
    constants, its value, each term and the gradient with respect to the logits and the values.
    Discrete: π = softmax(logits), H = −Σ_a π log π. Continuous: π = N(mean, σ²) per dimension from
    ``[mean; log σ]``, log π(a) the density, H = Σ_dims ½ log(2πe) + log σ."""
    torch.manual_seed(5)
    T, B, A_, w_v, w_e = 6, 3, 4, 0.3, 0.02
    logits = torch.randn(T, B, 2 * A_ if continuous else A_, dtype=torch.float64, requires_grad=True)
    values = torch.randn(T, B, dtype=torch.float64, requires_grad=True)
    behaviour = torch.randn(*logits.shape, dtype=torch.float64)
    actions = torch.randn(T, B, A_, dtype=torch.float64) if continuous else torch.randint(0, A_, (T, B))
    rewards = torch.randn(T, B, dtype=torch.float64)
    discounts = 0.9 * (torch.rand(T, B) > 0.2).double()
    boot = torch.randn(B, dtype=torch.float64)
    losses = actor_critic_loss(logits, values, actions, behaviour, rewards, discounts, boot, w_v, w_e, continuous)

    if continuous:
        log_pi_a, log_mu_a = gaussian_log_density(logits, actions), gaussian_log_density(behaviour, actions)
        entropy = (0.5 * math.log(2 * math.pi * math.e) + logits.chunk(2, -1)[1]).sum()
    else:
        pi, mu = torch.softmax(logits, -1), torch.softmax(behaviour, -1)
        log_pi_a = torch.log(pi.gather(-1, actions[..., None]).squeeze(-1))
        log_mu_a = torch.log(mu.gather(-1, actions[..., None]).squeeze(-1))
        entropy = -(pi * torch.log(pi)).sum()
    vs, adv = vtrace_ground_truth((log_pi_a - log_mu_a).tolist(), discounts.tolist(), rewards.tolist(),
                                  values.tolist(), boot.tolist(), 1.0, 1.0)
    policy = -(log_pi_a * adv).sum()
    value = 0.5 * ((vs - values) ** 2).sum()
    entropy_term = -w_e * entropy
    total = policy + w_v * value + entropy_term
    for got, want in ((losses.policy, policy), (losses.value, value), (losses.entropy, entropy_term),
                      (losses.total, total)):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)
    g_logits, g_values = torch.autograd.grad(losses.total, (logits, values))
    r_logits, r_values = torch.autograd.grad(total, (logits, values))
    assert torch.allclose(g_values, w_v * (values - vs).detach(), rtol=1e-12, atol=1e-12)  # targets are constants
    assert torch.allclose(g_logits, r_logits, rtol=1e-12, atol=1e-12)


OBS, A, N = 4, 3, 5


def random_stream(steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    done = torch.rand(steps + 1, generator=g) < 0.15
    done[0] = True
    return dict(obs=torch.randn(steps + 1, OBS, generator=g, dtype=torch.float64),
                reward=torch.randn(steps + 1, generator=g, dtype=torch.float64),
                done=done, action=torch.randint(0, A, (steps,), generator=g),
                logits=torch.randn(steps, A, generator=g, dtype=torch.float64))


def rollout(streams: dict[int, dict], ids: list[int], start: int, M: int, agent: Agent) -> Rollout:
    cols = [streams[i] for i in ids]
    cat = lambda k, n: torch.stack([c[k][start : start + n] for c in cols], 1)  # noqa: E731
    return Rollout(obs=cat("obs", M + 1), reward=cat("reward", M + 1), done=cat("done", M + 1),
                   action=cat("action", M), logits=cat("logits", M), streams=torch.tensor(ids),
                   state=agent.initial_state(len(ids), learner=False))


def core_width(core: str) -> int:
    return N + 1 if "rtu" in core else N  # the RTU's width must be even: two features per complex unit


@pytest.mark.parametrize("core", ["rtrl-elstm", "rtrl-lru", "rtrl-rtu", "rtrl-diag", "rtrl2-lru"])
def test_learner_rtrl_across_segments_and_streams_equals_bptt(core):
    # rtrl2-lru (two layers, the bottom one learning within the segment): exact above its bottom layer
    torch.manual_seed(1)
    M, steps = 4, 12
    agent = Agent((OBS,), A, core=core, hidden_size=core_width(core), encoder_width=6).double()
    streams = {i: random_stream(steps, seed=i) for i in range(4)}
    streams[1]["done"][M] = True  # a reset exactly at a segment boundary
    # several "actors": streams come in different groupings and orders, each stream in time order
    schedule = [([0, 1], 0), ([2, 3], 0), ([1, 0], M), ([3, 2], M), ([2, 0, 1, 3], 2 * M)]
    learner = Learner(agent, LearnerConfig(lr=0.0, grad_clip=1e9, reward_clip=0), num_streams=4)
    exact_params = {n for n, _ in agent.named_parameters() if not n.startswith(("stem.", "core.bottom."))}
    total = {n: torch.zeros_like(p) for n, p in agent.named_parameters()}
    for ids, start in schedule:
        r = rollout(streams, ids, start, M, agent)
        stats, state = learner.backward(r)
        for n, p in agent.named_parameters():
            total[n] += p.grad
        learner.step(r, state, stats)
    # reference: the same losses, autograd through every stream's whole sequence (core in BPTT mode)
    ref = copy.deepcopy(agent)
    ref.core.learning = "bptt"
    if hasattr(ref.core, "top"):
        ref.core.top.learning = "bptt"
    ref.zero_grad()
    cfg, loss = learner.cfg, 0.0
    for i in range(4):
        s, state = streams[i], ref.core.initial_state(1)
        for start in range(0, steps, M):
            seg = lambda k, n: s[k][start : start + n, None]  # noqa: E731
            logits, values, state = ref(seg("obs", M), seg("reward", M), seg("done", M), state)
            with torch.no_grad():
                _, boot, _ = ref(seg("obs", M + 1)[M:], seg("reward", M + 1)[M:], seg("done", M + 1)[M:],
                                 RecurrentState(state.c.detach()))
            disc = cfg.discount * (~seg("done", M + 1)[1:]).double()
            loss = loss + actor_critic_loss(logits, values, seg("action", M), seg("logits", M),
                                            seg("reward", M + 1)[1:], disc, boot[0]).total
    loss.backward()
    for n, p in ref.named_parameters():
        if n in exact_params:
            err = (total[n] - p.grad).abs().max() / p.grad.abs().max()
            assert err < 1e-9, (n, err.item())
    # the stem below the core gets only within-segment gradients: visibly different
    assert not torch.allclose(total["stem.net.0.weight"], ref.stem.net[0].weight.grad, atol=1e-6)


@pytest.mark.parametrize("core", [c for c in CORES if c not in WHOLE_EPISODE_CORES])
def test_every_core_learns_a_step_and_keeps_weights_on_nan(core):
    torch.manual_seed(2)
    agent = Agent((OBS,), A, core=core, hidden_size=core_width(core))
    learner = Learner(agent, LearnerConfig(), num_streams=2)
    streams = {i: {k: v.float() if v.is_floating_point() else v for k, v in random_stream(6, i).items()}
               for i in range(2)}
    r = rollout(streams, [0, 1], 0, 5, agent)
    before = [p.detach().clone() for p in agent.parameters()]
    stats = learner.update(r)
    assert learner.updates == 1 and all(k in stats for k in ("loss", "grad_norm", "lr"))
    assert any(not torch.equal(a, p) for a, p in zip(before, agent.parameters()))
    good = [p.detach().clone() for p in agent.parameters()]
    r.reward[2, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="weights kept"):
        learner.update(r)
    assert all(torch.equal(a, p) for a, p in zip(good, agent.parameters())) and learner.updates == 1


def test_learner_scales_each_streams_rewards_by_its_running_discounted_return():
    # rollouts of different groupings of the streams, each stream in time order (as actors send them):
    # the loss must use r / sqrt(var(G) + 1e-8), with G <- γ G + r run on per stream across rollouts
    # and the variance folding in the G of every stream of a rollout, step by step
    torch.manual_seed(3)
    M, gamma, clip = 3, 0.9, 5.0
    agent = Agent((OBS,), A, core="none").double()
    streams = {i: random_stream(3 * M, seed=10 + i) for i in range(4)}
    for s in streams.values():
        s["reward"] = s["reward"] * 4
    cfg = LearnerConfig(lr=0.0, discount=gamma, reward_clip=clip, reward_scale=True)
    learner = Learner(agent, cfg, num_streams=4)
    G, var = {i: 0.0 for i in streams}, RunningMeanStd(())
    for ids, start in [([0, 1], 0), ([3, 2], 0), ([1, 0], M), ([3, 2], M), ([2, 0, 1, 3], 2 * M)]:
        r = rollout(streams, ids, start, M, agent)
        scaled = r.reward.clone()
        for t in range(1, M + 1):
            for b, i in enumerate(ids):
                G[i] = gamma * G[i] + float(r.reward[t, b])
            var.update(torch.tensor([G[i] for i in ids], dtype=torch.float64))
            scaled[t] = (r.reward[t] / math.sqrt(var.var.item() + 1e-8)).clamp(-10, 10)
            for b, i in enumerate(ids):
                G[i] = 0.0 if r.done[t, b] else G[i]
        with torch.no_grad():
            logits, values, _ = agent(r.obs[:M], r.reward[:M], r.done[:M], r.state)
            _, boot, _ = agent(r.obs[M:], r.reward[M:], r.done[M:], r.state)
            want = actor_critic_loss(logits, values, r.action, r.logits, scaled[1:].clamp(-clip, clip),
                                     gamma * (~r.done[1:]).double(), boot[0], cfg.value_weight,
                                     cfg.entropy_weight).total
        got = learner.update(r)["loss"]
        assert got == pytest.approx(want.item(), rel=1e-9)
    torch.testing.assert_close(learner.reward_scaler.returns, torch.tensor([G[i] for i in range(4)],
                                                                           dtype=torch.float64))
    assert learner.state_dict()["reward_scaler"]["rms.count"].item() == pytest.approx(var.count.item())
    unscaled = Learner(agent, dataclasses.replace(cfg, reward_scale=False), num_streams=4)
    assert unscaled.update(r)["loss"] != pytest.approx(got, rel=1e-3)  # the scaling changed the loss


def test_bad_agent_and_rollout_inputs():
    with pytest.raises(ValueError, match="unknown core"):
        Agent((OBS,), A, core="transformer")
    with pytest.raises(ValueError, match="flat vectors"):
        Agent((2, 2), A)
    with pytest.raises(ValueError, match="unknown stem"):
        Agent((OBS,), A, stem="resnet")
    with pytest.raises(ValueError, match="does not fit"):
        Agent((OBS,), A, stem="nature")
    agent = Agent((OBS,), A)
    learner = Learner(agent, LearnerConfig(), num_streams=2)
    streams = {i: {k: v.float() if v.is_floating_point() else v for k, v in random_stream(6, i).items()}
               for i in range(2)}
    with pytest.raises(ValueError, match="streams"):
        learner.update(rollout({0: streams[0], 5: streams[1]}, [0, 5], 0, 3, agent))
    with pytest.raises(ValueError, match="M >= 1"):
        learner.update(rollout(streams, [0, 1], 0, 0, agent))


def test_nature_stem_reads_pixels():
    agent = Agent((4, 84, 84), A, core="rtrl-elstm", hidden_size=8, stem="nature")
    obs = torch.randint(0, 256, (3, 2, 4, 84, 84), dtype=torch.uint8)
    logits, values, _ = agent(obs, torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool), agent.initial_state(2))
    assert logits.shape == (3, 2, A) and values.shape == (3, 2)
    values.sum().backward()
    assert agent.stem.convs[0].weight.grad.abs().sum() > 0


def test_gru_core_follows_torch_gru_and_resets():
    """The gru core is nn.GRU's recurrence stepped with resets: equal to torch.nn.GRU run episode by episode."""
    torch.manual_seed(3)
    agent = Agent((OBS,), A, core="gru", hidden_size=N, encoder_width=OBS).double()  # the core reads OBS + 1
    gru = torch.nn.GRU(OBS + 1, N).double()
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        getattr(gru, f"{name}_l0").data.copy_(getattr(agent.core.cell, name))
    x = torch.randn(9, 2, OBS + 1, dtype=torch.float64)
    reset = torch.zeros(9, 2, dtype=torch.bool)
    reset[4, 1] = True  # stream 1 starts a new episode at step 4
    y, state = agent.core(x, agent.initial_state(2), reset)
    ref0, _ = gru(x[:, :1])
    ref1 = torch.cat((gru(x[:4, 1:])[0], gru(x[4:, 1:])[0]))
    assert torch.allclose(y[:, :1], ref0, atol=1e-12) and torch.allclose(y[:, 1:], ref1, atol=1e-12)
    assert torch.allclose(state.c, torch.cat((ref0[-1], ref1[-1])), atol=1e-12)
