"""PPO with an RTRL core: exact gradients across rollouts, learning a memory task, the CLI."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys

import pytest
import torch

from rtrl.cli import main
from rtrl.state import RecurrentState
from rtrl.rl.agent import CORES, WHOLE_EPISODE_CORES
from rtrl.rl.envs import make_env
from rtrl.rl.ppo import PPO, Collector, gae
from rtrl.rl.train import TrainConfig, build_agent, train
from rtrl.runs import load_checkpoint


def test_gae_matches_the_formula():
    torch.manual_seed(0)
    T, B, gamma, lam = 6, 3, 0.9, 0.8
    reward, value = torch.randn(T + 1, B, dtype=torch.float64), torch.randn(T + 1, B, dtype=torch.float64)
    done = torch.rand(T + 1, B) < 0.3
    adv, ret = gae(reward, done, value, gamma, lam)
    for b in range(B):
        for t in range(T):
            # A_t = Σ_{k≥t} (γλ)^{k-t} δ_k, stopping after the transition that ends the episode
            total, w = 0.0, 1.0
            for k in range(t, T):
                alive = 0.0 if done[k + 1, b] else 1.0
                total += w * (reward[k + 1, b] + gamma * alive * value[k + 1, b] - value[k, b])
                if not alive:
                    break
                w *= gamma * lam
            assert abs(adv[t, b] - total) < 1e-12
    assert torch.allclose(ret, adv + value[:T])


@pytest.mark.parametrize("clip_value, continuous", [(True, False), (False, False), (True, True)])
def test_ppo_loss_matches_its_formula(clip_value, continuous):
    """PPO's loss (Schulman et al. 2017), element by element on a real rollout: advantages
    normalised over the minibatch, ``−mean min(r A, clip(r, 1 ± ε) A)``, the value loss
    ``½ mean max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²)`` (or plain ``½ mean (V − R)²``),
    the entropy bonus, their weighted sum, the statistics, and the gradient of every weight. Old
    log-probabilities and values are moved off the current ones so that every branch is taken.
    Continuous (Pendulum's Box action): π = N(mean, σ²) per dimension from the head's ``[mean; log σ]``,
    its log-density summed over dimensions and its entropy ``Σ ½ log(2πe) + log σ``."""
    torch.manual_seed(0)
    env_name = "Pendulum-v1" if continuous else "rtrl-Recall-v0"
    cfg = TrainConfig(algo="ppo", env=env_name, core="rtrl-elstm", num_envs=4, unroll=6, ppo_minibatches=1,
                      hidden_size=6, encoder_width=6, value_weight=0.7, entropy_weight=0.05, clip_coef=0.2,
                      clip_value=clip_value)
    env = make_env(cfg.env, cfg.num_envs, seed=1)
    agent = build_agent(cfg, env).double()
    collector = Collector(env, agent, cfg.unroll, seed=1)
    seg, _ = collector.collect()
    with torch.no_grad():  # the second rollout starts mid-episode, from a carried state and sensitivities
        collector.state = agent(seg.obs[:-1], seg.reward[:-1], seg.done[:-1], seg.state)[2]
    seg, _ = collector.collect()
    env.close()
    assert seg.state.c.abs().min() > 0
    T, B, eps = cfg.unroll, cfg.num_envs, cfg.clip_coef
    g = torch.Generator().manual_seed(0)
    noise = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64) - 0.5  # noqa: E731
    seg = dataclasses.replace(seg, logprob=seg.logprob + 1.2 * noise(T, B), value=seg.value + noise(T + 1, B))
    adv, ret = torch.randn(T, B, generator=g, dtype=torch.float64), torch.randn(T, B, generator=g, dtype=torch.float64)
    params = [p for p in agent.parameters()]
    loss, stats = PPO(agent, cfg).loss(seg, adv, ret)
    got_grads = torch.autograd.grad(loss, params)

    logits, values, _ = agent(seg.obs[:T], seg.reward[:T], seg.done[:T], seg.state)
    mean = adv.mean()
    std = math.sqrt(sum((a - mean) ** 2 for a in adv.flatten()) / (T * B))
    surrogate, value_terms, entropies, kls, clipped = [], [], [], [], 0
    for t in range(T):
        for b in range(B):
            if continuous:
                mu, log_std = logits[t, b].chunk(2)
                z = (seg.action[t, b] - mu) / log_std.exp()
                log_pi_a = (-0.5 * z ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum()
                entropies.append((0.5 * math.log(2 * math.pi * math.e) + log_std).sum())
            else:
                pi = torch.softmax(logits[t, b], -1)
                log_pi_a = torch.log(pi[seg.action[t, b]])
                entropies.append(-(pi * torch.log(pi)).sum())
            r = torch.exp(log_pi_a - seg.logprob[t, b])
            a = (adv[t, b] - mean) / (std + 1e-8)
            surrogate.append(torch.min(r * a, torch.clamp(r, 1 - eps, 1 + eps) * a))
            v, v_old, target = values[t, b], seg.value[t, b], ret[t, b]
            v_clipped = v_old + torch.clamp(v - v_old, -eps, eps)
            value_terms.append(torch.max((v - target) ** 2, (v_clipped - target) ** 2) if clip_value
                               else (v - target) ** 2)
            kls.append((r - 1) - torch.log(r))
            clipped += abs(r.item() - 1) > eps
    policy = -torch.stack(surrogate).mean()
    value = 0.5 * torch.stack(value_terms).mean()
    entropy = torch.stack(entropies).mean()
    total = policy + cfg.value_weight * value - cfg.entropy_weight * entropy
    want_grads = torch.autograd.grad(total, params)

    assert 0 < clipped < T * B  # both clipped and unclipped ratios
    for key, want in (("loss", total), ("policy_loss", policy), ("value_loss", value), ("entropy", entropy),
                      ("approx_kl", torch.stack(kls).mean()), ("clip_frac", clipped / (T * B))):
        want = want.detach().item() if torch.is_tensor(want) else want
        assert abs(stats[key].item() - want) < 1e-12, key
    assert abs(loss.item() - total.item()) < 1e-12
    for (n, _), a, b in zip(agent.named_parameters(), got_grads, want_grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12), n


STANDARD = dict(critic="separate", obs_norm=True, activation="tanh", init="orthogonal", reward_scale=True)


@pytest.mark.parametrize("core, extra", [(c, {}) for c in CORES if c.startswith("rtrl-")]
                         + [("rtrl-rtu", STANDARD), ("rtrl-elstm", STANDARD)])
def test_ppo_gradient_from_carried_sensitivities_equals_bptt_through_earlier_rollouts(core, extra):
    # Recall episodes last 5 steps; rollouts of 7 start mid-episode, from a nonzero state.
    # With lr = 0 the weights stay fixed, so RTRL's gradient must equal BPTT's through all rollouts.
    # STANDARD: the presets' machinery (a separate critic core beside the actor's, normalised inputs).
    torch.manual_seed(0)
    cfg = TrainConfig(algo="ppo", core=core, num_envs=4, unroll=7, ppo_epochs=2, ppo_minibatches=2,
                      optimizer="adam", lr=0.0, grad_clip=1e9, hidden_size=6, encoder_width=6, reward_clip=0,
                      **extra)
    cfg.validate()
    env = make_env(cfg.env, cfg.num_envs, seed=3)
    agent = build_agent(cfg, env).double()
    ppo, collector = PPO(agent, cfg), Collector(env, agent, cfg.unroll, seed=3)
    segs = []
    for _ in range(2):  # two earlier rollouts, each fully "trained on" (weights unchanged at lr 0)
        seg, _ = collector.collect()
        segs.append(seg)
        _, collector.state = ppo.update(seg)
    seg, _ = collector.collect()
    env.close()
    assert seg.state.c.abs().min() > 0 and seg.state.sensitivities.weight_ih.abs().sum() > 0
    assert not seg.done[0].any()  # really in the middle of every episode

    T, idx = cfg.unroll, torch.tensor([2, 0])  # one minibatch of one epoch
    adv, ret = gae(seg.reward.double(), seg.done, seg.value, cfg.discount, cfg.gae_lambda)
    loss, _ = ppo.loss(seg.envs(idx), adv[:, idx], ret[:, idx])
    agent.zero_grad()
    loss.backward()
    got = {n: p.grad.clone() for n, p in agent.named_parameters()}

    # reference: the same loss, autograd through the earlier rollouts too (core in BPTT mode)
    ref = copy.deepcopy(agent)
    for m in ref.core.modules():  # every layer of the core (both halves of a paired one) by BPTT
        if hasattr(m, "learning"):
            m.learning = "bptt"
    state = ref.core.initial_state(len(idx))
    for s in segs:
        _, _, state = ref(s.obs[:T, idx], s.reward[:T, idx], s.done[:T, idx], state)
    assert torch.allclose(state.c, seg.state.c[idx], atol=1e-12)  # the carried c is the true c
    ref_seg = dataclasses.replace(seg.envs(idx), state=state)
    ref_loss, _ = PPO(ref, cfg).loss(ref_seg, adv[:, idx], ret[:, idx])
    ref.zero_grad()
    ref_loss.backward()
    assert abs(ref_loss.item() - loss.item()) < 1e-12
    recurrent = [n for n, _ in agent.core.named_parameters(prefix="core") if not n.startswith("core.output_gate")]
    assert recurrent
    for n, p in ref.named_parameters():
        if n.startswith(("stem.", "critic_stem.")):
            continue
        err = (got[n] - p.grad).abs().max() / p.grad.abs().max()
        assert err < 1e-9, (n, err.item())
    # the carry-in term is what makes it exact: without S_0 the recurrent weights' gradient is visibly off
    trunc = copy.deepcopy(agent)
    for m in trunc.core.modules():
        if hasattr(m, "learning"):
            m.learning = "bptt"
    cut_seg = dataclasses.replace(seg.envs(idx), state=RecurrentState(seg.state.c[idx]))
    PPO(trunc, cfg).loss(cut_seg, adv[:, idx], ret[:, idx])[0].backward()
    cut, full = dict(trunc.named_parameters()), dict(ref.named_parameters())
    assert any(not torch.allclose(cut[n].grad, full[n].grad, rtol=1e-3) for n in recurrent)


# The `ppo` preset with lr 2e-3. Measured: greedy return 1.0 after 7k frames on seeds 0, 1, 2.
def test_carried_state_is_the_behaviour_policys_state_under_changing_weights():
    # after each update the segment is re-run with the new weights; the next rollout acts from that
    # state, so re-running it before any step reproduces the behaviour policy: ratio 1
    torch.manual_seed(0)
    cfg = TrainConfig(algo="ppo", core="rtrl-elstm", num_envs=4, unroll=7, ppo_minibatches=2, optimizer="adam",
                      lr=1e-2, hidden_size=8)
    env = make_env(cfg.env, cfg.num_envs, seed=0)
    agent = build_agent(cfg, env)
    ppo, collector = PPO(agent, cfg), Collector(env, agent, cfg.unroll, seed=0)
    for _ in range(3):
        seg, _ = collector.collect()
        with torch.no_grad():
            logits, values, _ = agent(seg.obs[:-1], seg.reward[:-1], seg.done[:-1], seg.state)
        logprob = torch.log_softmax(logits, -1).gather(-1, seg.action[..., None]).squeeze(-1)
        assert torch.allclose(logprob, seg.logprob, atol=1e-5) and torch.allclose(values, seg.value[:-1], atol=1e-5)
        before = [p.detach().clone() for p in agent.parameters()]
        _, collector.state = ppo.update(seg)
        assert any(not torch.equal(a, p) for a, p in zip(before, agent.parameters()))
    env.close()


SMALL = dict(algo="ppo", optimizer="adam", lr=2e-3, unroll=20, num_envs=16, grad_clip=0.5, log_every=5,
             checkpoint_every=50, eval_episodes=30)


def test_ppo_rtrl_core_learns_to_remember_where_feedforward_cannot(tmp_path):
    rtrl = train(TrainConfig(core="rtrl-elstm", total_frames=8_000, **SMALL), tmp_path / "rtrl", progress=False)
    # a memoryless policy cannot beat chance however long it trains: a short run is enough to show it
    ff = train(TrainConfig(core="none", total_frames=3_200, **SMALL), tmp_path / "ff", progress=False)
    assert rtrl["eval"]["greedy"]["mean"] > 0.8, rtrl
    assert ff["eval"]["greedy"]["mean"] < 0.4, ff  # guessing: 0 in expectation
    for name in ("config.json", "metrics.csv", "result.json", "eval.json", "curve.png", "checkpoints/latest.pt"):
        assert (tmp_path / "rtrl" / name).is_file(), name


def test_cli_ppo_writes_a_run_folder_and_resume_continues(tmp_path, capsys):
    run = tmp_path / "run"
    base = [sys.executable, "-m", "rtrl.cli", "train", "--preset", "ppo", "--num-envs", "4",
            "--unroll", "10",
            "--ppo-minibatches", "2", "--log-every", "2", "--checkpoint-every", "4", "--eval-episodes", "2",
            "--run-dir", str(run), "--no-progress"]
    first = subprocess.run([*base, "--total-frames", "200"], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["updates"] == 5
    for name in ("config.json", "metrics.csv", "result.json", "eval.json", "checkpoints/latest.pt"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["algo"] == "ppo"
    assert main([*base[3:], "--total-frames", "400"]) == 2  # the same folder again without --resume
    assert "--resume" in capsys.readouterr().err
    assert main([*base[3:], "--total-frames", "400", "--resume"]) == 0  # in-process: one interpreter start is enough
    result = json.loads(capsys.readouterr().out)
    assert result["updates"] == 10 and result["frames"] == 400
    ckpt = load_checkpoint(run / "checkpoints/latest.pt", "ppo")
    assert ckpt["ppo"]["updates"] == 10 and ckpt["counters"]["restarts"] == 1
    # Adam's moments and step count travel with the run: 10 updates x 2 epochs x 2 minibatches
    assert int(ckpt["ppo"]["optimizer"]["state"][0]["step"]) == 40
    assert ckpt["ppo"]["optimizer"]["updates"] == 10  # the learning-rate schedule advanced once an iteration
    steps = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps)) and steps[-1] == 400


@pytest.mark.parametrize("args, message", [
    (["--num-envs", "6", "--ppo-minibatches", "4"], "must divide num_envs"),
    (["--num-actors", "2"], "--num-actors at 0"),
    (["--batch-rollouts", "2"], "--batch-rollouts is for --algo impala"),
    (["--ppo-epochs", "0"], "ppo_epochs must be positive"),
    (["--clip-coef", "0"], "clip_coef must be a positive number"),
    (["--gae-lambda", "1.5"], "gae_lambda must be in [0, 1]"),
    (["--optimizer", "sgd", "--total-frames", "10"], "unknown optimizer"),
])
def test_bad_ppo_config_errors_are_clear(tmp_path, capsys, args, message):
    assert main(["train", "--preset", "ppo", *args, "--run-dir", str(tmp_path / "r"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_unknown_algo_is_refused():
    with pytest.raises(SystemExit):
        main(["train", "--algo", "sac"])
    with pytest.raises(ValueError, match="unknown algo"):
        TrainConfig(algo="sac").validate()


@pytest.mark.parametrize("core", [c for c in CORES if c != "rtrl-elstm"])
def test_every_core_trains_with_ppo(core):
    # bptt-elstm and bptt2-lru need rollouts of exactly one episode: Recall's episodes last 5 steps
    cfg = TrainConfig(algo="ppo", core=core, num_envs=4, unroll=5, ppo_minibatches=2, total_frames=40,
                      hidden_size=8, optimizer="adam", lr=1e-3)
    result = train(cfg, None, progress=False)
    assert result["updates"] == 2 and result["skipped_updates"] == 0
    if core not in WHOLE_EPISODE_CORES:
        return
    with pytest.raises(ValueError, match="exactly one episode"):
        train(TrainConfig(**{**cfg.__dict__, "unroll": 4}), None, progress=False)
