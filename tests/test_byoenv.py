"""Bring your own environment: any Gymnasium id, ``module:EnvId``, a user's VectorEnv, Box actions (a
Gaussian policy), and terminated vs truncated (bootstrap through a time limit).

Real envs throughout: Gymnasium's own (CartPole, Pendulum, MuJoCo's Hopper) and ``tests/byo_envs.py``,
a user's module that registers two tiny envs with a 4-step ``TimeLimit``."""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

gym = pytest.importorskip("gymnasium")

import rtrl.api  # noqa: E402
from rtrl.rl import dists  # noqa: E402
from rtrl.rl.actors import ActorLoop  # noqa: E402
from rtrl.rl.agent import Agent  # noqa: E402
from rtrl.rl.envs import make_env  # noqa: E402
from rtrl.rl.envs.generic import VectorEnvAdapter  # noqa: E402
from rtrl.rl.envs.gymnasium import _box_decoder  # noqa: E402
from rtrl.rl.learner import Learner, LearnerConfig, Rollout  # noqa: E402
from rtrl.rl.ppo import Segment, advantages  # noqa: E402
from rtrl.rl.train import TrainConfig  # noqa: E402
from rtrl.rl.vtrace import actor_critic_loss, vtrace  # noqa: E402
from rtrl.state import RecurrentState  # noqa: E402

TESTS = Path(__file__).parent


# -- any Gymnasium id, module:EnvId -----------------------------------------------------------------


def test_any_registered_id_with_discrete_and_box_actions():
    env = make_env("CartPole-v1", 3)
    assert (env.obs_shape, env.num_actions, env.continuous) == ((4,), 2, False)
    env.reset(0)
    env.step(np.zeros(3, np.int64))
    env = make_env("Pendulum-v1", 2)
    assert (env.obs_shape, env.num_actions, env.continuous) == ((3,), 1, True)
    env.reset(0)
    obs, r, d = env.step(np.zeros((2, 1), np.float32))
    assert obs.shape == (2, 3) and r.dtype == np.float32
    with pytest.raises(ValueError, match=r"shape \(num_envs, action size\) = \(2, 1\)"):
        env.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="finite floats"):
        env.step(np.full((2, 1), np.nan, np.float32))


def test_box_actions_are_mapped_from_the_normalised_space():
    _, decode, _, _ = _box_decoder(gym.spaces.Box(np.array([-2.0, 0.0]), np.array([2.0, 10.0]), dtype=np.float64))
    np.testing.assert_allclose(decode(np.array([1.0, -1.0])), [2.0, 0.0])
    np.testing.assert_allclose(decode(np.array([0.0, 0.5])), [0.0, 7.5])
    np.testing.assert_allclose(decode(np.array([-7.0, 3.0])), [-2.0, 10.0])  # clipped first
    _, decode, _, _ = _box_decoder(gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    np.testing.assert_allclose(decode(np.array([-7.0, 3.0])), [-7.0, 3.0])  # unbounded: as it is


def test_module_colon_env_id_imports_the_module_first():
    sys.modules.pop("byo_envs", None)
    for env_id in ("Tick-v0", "TickBox-v0"):
        gym.registry.pop(env_id, None)
    env = make_env("byo_envs:Tick-v0", 2)
    assert "byo_envs" in sys.modules and env.name == "byo_envs:Tick-v0"
    assert make_env("byo_envs:TickBox-v0", 1).continuous


def test_bad_names_get_one_clear_error():
    with pytest.raises(ImportError, match="cannot import module 'no_such_module'.*PYTHONPATH"):
        make_env("no_such_module:Foo-v0", 1)
    with pytest.raises(ValueError, match="'Nope-v0' is not registered after importing 'byo_envs'.*module:"):
        make_env("byo_envs:Nope-v0", 1)
    with pytest.raises(ValueError, match="unknown environment 'CartPol-v1'.*Did you mean 'CartPole-v1'"):
        make_env("CartPol-v1", 1)
    with pytest.raises(ValueError, match="positions-only observations need a MuJoCo env.*or a classic-control"):
        make_env("PositionOnly/FrozenLake-v1", 1)


class _TextActions(gym.Env):
    observation_space = gym.spaces.Box(0, 1, (2,), np.float32)
    action_space = gym.spaces.Text(5)


class _TextObs(gym.Env):
    observation_space = gym.spaces.Text(5)
    action_space = gym.spaces.Discrete(2)


def test_unsupported_spaces_are_refused_naming_what_works():
    gym.register("rtrl-test/TextActions-v0", entry_point=_TextActions)
    gym.register("rtrl-test/TextObs-v0", entry_point=_TextObs)
    with pytest.raises(ValueError, match="action space Text.*Discrete, MultiDiscrete or Box"):
        make_env("rtrl-test/TextActions-v0", 1)
    with pytest.raises(ValueError, match="observation space Text.*not supported"):
        make_env("rtrl-test/TextObs-v0", 1)


def test_images_stay_images():
    from rtrl.rl.envs.gymnasium import _obs_encoder

    shape, encode, dtype = _obs_encoder(gym.spaces.Box(0, 255, (6, 5, 3), np.uint8))
    assert shape == (3, 6, 5) and dtype == np.uint8
    img = np.arange(90, dtype=np.uint8).reshape(6, 5, 3)
    np.testing.assert_array_equal(encode(img)[1], img[..., 1])


def test_mujoco_positions_only_and_velocities_only():
    pytest.importorskip("mujoco")
    full = gym.make("Hopper-v5")
    obs, _ = full.reset(seed=3)
    pos, vel = make_env("PositionOnly/Hopper-v5", 1), make_env("VelocityOnly/Hopper-v5", 1)
    assert pos.obs_shape == (5,) and vel.obs_shape == (6,) and pos.continuous and pos.num_actions == 3
    np.testing.assert_allclose(pos.reset(3)[0], obs[:5], rtol=1e-6)  # qpos less the torso's x
    np.testing.assert_allclose(vel.reset(3)[0], obs[5:], rtol=1e-6)  # qvel


# -- terminated vs truncated ------------------------------------------------------------------------


def test_terminated_and_truncated_are_kept_apart():
    importlib.import_module("byo_envs")
    env = make_env("Tick-v0", 2)
    env.reset(0)
    for t in range(2):
        _, _, done = env.step(np.zeros(2, np.int64))
        assert not done.any() and not env.truncated.any() and env.final_obs is None
    _, r, done = env.step(np.array([1, 0]))  # env 0 terminates at step 2
    assert done.tolist() == [True, False] and env.truncated.tolist() == [False, False] and r.tolist() == [3, 3]
    obs, r, done = env.step(np.array([0, 0]))  # env 1 hits the 4-step time limit
    assert done.tolist() == [False, True] and env.truncated.tolist() == [False, True]
    np.testing.assert_allclose(env.final_obs[1], [0.4, 1.0])  # where the cut episode stopped
    np.testing.assert_allclose(obs[1], [0.0, 1.0])  # ...while obs already starts the next one
    assert env.pop_episode_stats() == [(6.0, 3), (10.0, 4)]


def test_bootstrap_through_a_time_limit_hand_computed():
    # obs 0..3 of one stream; the episode ended by a time limit on arriving at obs 2, whose
    # final observation is worth 10; γ = 0.5, on-policy, V = 1, 2, 3 and the bootstrap V(obs 3) = 4.
    #   target(2) = r3 + γ V(obs 3) = 3 + 2            = 5
    #   target(1) = r2 + γ·10 (no bootstrap past it) = 2 + 5 = 7
    #   target(0) = r1 + γ·target(1)                 = 1 + 3.5 = 4.5
    # (a termination at the same step would give 5, 2, 2)
    col = lambda *v, dtype=torch.float64: torch.tensor(v, dtype=dtype)[:, None]  # noqa: E731
    done, trunc = col(True, False, True, False, dtype=torch.bool), col(False, False, True, False, dtype=torch.bool)
    reward, final = col(0.0, 1.0, 2.0, 3.0), col(0.0, 0.0, 10.0, 0.0)
    r = Rollout(obs=torch.zeros(4, 1, 2), reward=reward, done=done, action=torch.zeros(3, 1, dtype=torch.long),
                logits=torch.zeros(3, 1, 2), streams=torch.tensor([0]), state=RecurrentState(torch.zeros(1, 0)),
                truncated=trunc, final_value=final)
    discounts = 0.5 * (~done[1:]).double()
    vs = vtrace(torch.zeros(3, 1, dtype=torch.float64), discounts, r.bootstrap_rewards(reward[1:], 0.5),
                col(1.0, 2.0, 3.0), torch.tensor([4.0], dtype=torch.float64)).vs
    assert vs[:, 0].tolist() == [4.5, 7.0, 5.0]
    seg = Segment(obs=r.obs, reward=reward, done=done, action=r.action, logprob=torch.zeros(3, 1),
                  value=col(1.0, 2.0, 3.0, 4.0), state=r.state, final_value=final)
    cfg = TrainConfig(discount=0.5, gae_lambda=1.0, reward_clip=0)
    adv, ret = advantages(seg, cfg)
    assert ret[:, 0].tolist() == [4.5, 7.0, 5.0] and adv[:, 0].tolist() == [3.5, 5.0, 2.0]


def _always_truncating(core: str):
    """Two ``Tick-v0`` envs (a 4-step time limit) and an agent that always picks action 0: never
    terminate, so every episode ends by truncation."""
    importlib.import_module("byo_envs")
    torch.manual_seed(0)
    env = make_env("Tick-v0", 2)
    agent = Agent(env.obs_shape, env.num_actions, core=core, hidden_size=6, encoder_width=6)
    with torch.no_grad():
        agent.policy.bias.copy_(torch.tensor([30.0, -30.0]))
    return env, agent


@pytest.mark.parametrize("core", ["rtrl-lru", "lstm"])
def test_actor_bootstraps_from_the_state_carried_on_and_the_learner_uses_it(core):
    env, agent = _always_truncating(core)
    loop = ActorLoop(env, agent, 6, 0, seed=0)
    torch.manual_seed(1)
    r, _ = loop.rollout()
    assert r.truncated[4].all() and not r.truncated[:4].any() and r.done[4].all()  # 4-step time limit, always
    # reference: the core run over the whole episode, then its final observation [0.4, 1], no reset
    episode = torch.cat((r.obs[:4], torch.tensor([[[0.4, 1.0]] * 2])))
    with torch.no_grad():
        _, values, _ = agent(episode, r.reward[:5], r.done[:5] & (torch.arange(5) == 0)[:, None],
                             agent.initial_state(2, learner=False))
    torch.testing.assert_close(r.final_value[4], values[4])
    assert r.truncated[5:].sum() == 0 and (r.final_value[:4] == 0).all()
    # the learner's target uses it: V-trace's value loss with r + γ·V(final), not r
    learner = Learner(agent, LearnerConfig(lr=0.0, reward_clip=0), 2)
    stats, _ = learner.backward(r)
    with torch.no_grad():
        state0 = learner._gather(r.streams) if learner.bank is not None else r.state
        logits, v, state = agent(r.obs[:6], r.reward[:6], r.done[:6], state0)
        _, boot, _ = agent(r.obs[6:], r.reward[6:], r.done[6:], state)
    disc = 0.99 * (~r.done[1:]).float()
    for rewards, same in ((r.reward[1:] + 0.99 * r.final_value[1:], True), (r.reward[1:], False)):
        want = actor_critic_loss(logits, v, r.action, r.logits, rewards, disc, boot[0]).value.item()
        assert math.isclose(stats["value_loss"], want, rel_tol=1e-5) == same


@pytest.mark.parametrize("core", ["rtrl-lru", "lstm"])
def test_ppo_collector_bootstraps_from_the_state_carried_on(core):
    from rtrl.rl.ppo import Collector

    env, agent = _always_truncating(core)
    seg, _ = Collector(env, agent, 6, seed=0).collect()
    assert seg.done[4].all() and (seg.final_value[:4] == 0).all() and (seg.final_value[5:] == 0).all()
    episode = torch.cat((seg.obs[:4], torch.tensor([[[0.4, 1.0]] * 2])))
    with torch.no_grad():
        _, values, _ = agent(episode, seg.reward[:5], seg.done[:5] & (torch.arange(5) == 0)[:, None],
                             agent.initial_state(2, learner=False))
    torch.testing.assert_close(seg.final_value[4], values[4])


def test_truncated_episodes_still_reset_the_state():
    importlib.import_module("byo_envs")
    torch.manual_seed(0)
    env = make_env("Tick-v0", 1)
    agent = Agent(env.obs_shape, env.num_actions, core="rtrl-lru", hidden_size=6, encoder_width=6)
    with torch.no_grad():
        agent.policy.bias.copy_(torch.tensor([30.0, -30.0]))  # action 0: never terminate, always truncate
    loop = ActorLoop(env, agent, 9, 0, seed=0)
    r, _ = loop.rollout()
    assert r.done[[0, 4, 8]].all() and r.truncated[[4, 8]].all()
    logits = r.logits[:, 0]
    torch.testing.assert_close(logits[4], logits[0])  # same first observation, state reset: same output
    torch.testing.assert_close(logits[8], logits[0])


# -- a user's own VectorEnv -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["SAME_STEP", "DISABLED", "NEXT_STEP"])
def test_a_users_vector_env_steps_like_make_env(mode):
    importlib.import_module("byo_envs")
    venv = gym.vector.SyncVectorEnv([lambda: gym.make("Tick-v0")] * 3,
                                    autoreset_mode=getattr(gym.vector.AutoresetMode, mode))
    ours, ref = VectorEnvAdapter(venv), make_env("Tick-v0", 3)
    np.testing.assert_array_equal(ours.reset(5), ref.reset(5))
    rng = np.random.default_rng(0)
    for _ in range(12):
        a = rng.integers(2, size=3)
        for x, y in zip(ours.step(a), ref.step(a)):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(ours.truncated, ref.truncated)
        assert (ours.final_obs is None) == (ref.final_obs is None)
        if ref.final_obs is not None:
            np.testing.assert_array_equal(ours.final_obs[ref.truncated], ref.final_obs[ref.truncated])
    assert ours.pop_episode_stats() == ref.pop_episode_stats()


@pytest.mark.parametrize("mode", ["sync", "async", "vector_entry_point"])
def test_make_vec_in_every_mode_steps_like_make_env(mode):
    """gym.make_vec's default NEXT_STEP autoreset, in each vectorization mode (the native
    CartPoleVectorEnv cannot reset one sub-env: its copies are made from its spec)."""
    venv = gym.make_vec("CartPole-v1", num_envs=3, vectorization_mode=mode)
    ours, ref = rtrl.api.as_vec_env(venv), make_env("CartPole-v1", 3)
    np.testing.assert_array_equal(ours.reset(5), ref.reset(5))
    rng = np.random.default_rng(0)
    for _ in range(60):  # several episodes end (a random CartPole episode lasts ~20 steps)
        a = rng.integers(2, size=3)
        for x, y in zip(ours.step(a), ref.step(a)):
            np.testing.assert_array_equal(x, y)
    stats = ours.pop_episode_stats()
    assert len(stats) >= 3 and stats == ref.pop_episode_stats()
    ours.close()


def test_a_native_next_step_vector_env_without_spec_is_refused_with_the_fix():
    venv = gym.make_vec("CartPole-v1", num_envs=2)
    venv.spec = None
    with pytest.raises(ValueError, match="NEXT_STEP.*SAME_STEP"):
        rtrl.api.as_vec_env(venv)
    with pytest.raises(ValueError, match="NEXT_STEP"):
        VectorEnvAdapter(venv)


# -- the Gaussian policy ----------------------------------------------------------------------------


def test_gaussian_density_entropy_and_vtrace_ratio_match_the_formula():
    torch.manual_seed(0)
    T, B, A = 5, 3, 2
    pi, mu = torch.randn(T, B, 2 * A, dtype=torch.float64), torch.randn(T, B, 2 * A, dtype=torch.float64)
    a = torch.randn(T, B, A, dtype=torch.float64)

    def density(params, x):  # Π_i N(x_i; m_i, σ_i), written out
        m, log_s = params.chunk(2, -1)
        s = log_s.exp()
        return (torch.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))).prod(-1)

    torch.testing.assert_close(dists.log_prob(pi, a, True).exp(), density(pi, a))
    log_s = pi.chunk(2, -1)[1]
    torch.testing.assert_close(dists.entropy(pi, True), (0.5 * torch.log(2 * math.pi * math.e * log_s.exp() ** 2)).sum(-1))
    # V-trace's ratio in the loss is π(a)/μ(a) of the densities: rebuild the policy term from it
    values, rewards = torch.randn(T, B, dtype=torch.float64, requires_grad=True), torch.randn(T, B, dtype=torch.float64)
    disc, boot = torch.full((T, B), 0.9, dtype=torch.float64), torch.randn(B, dtype=torch.float64)
    losses = actor_critic_loss(pi, values, a, mu, rewards, disc, boot, continuous=True)
    ratio = density(pi, a) / density(mu, a)
    adv = vtrace(ratio.log(), disc, rewards, values.detach(), boot).pg_advantages
    torch.testing.assert_close(losses.policy, -(density(pi, a).log() * adv).sum())
    torch.testing.assert_close(losses.entropy, -0.01 * dists.entropy(pi, True).sum())


def test_gaussian_agent_acts_samples_and_learns_its_log_std():
    torch.manual_seed(0)
    agent = Agent((3,), 2, core="rtrl-lru", hidden_size=4, encoder_width=4, continuous=True)
    assert agent.param_size == 4 and agent.log_std.shape == (2,)
    state = agent.initial_state(1000, learner=False)
    obs, zeros, reset = torch.zeros(1000, 3), torch.zeros(1000), torch.ones(1000, dtype=torch.bool)
    a, params, _ = agent.act(obs, zeros, reset, state)
    g, _, _ = agent.act(obs, zeros, reset, state, greedy=True)
    mean = params[:, :2]
    torch.testing.assert_close(g, mean)  # greedy = the mean
    assert abs(float((a - mean).std()) - 1.0) < 0.05  # log_std 0: unit std draws
    logits, _, _ = agent(obs[None], zeros[None], reset[None], agent.initial_state(1000))
    dists.entropy(logits, True).sum().backward()
    assert agent.log_std.grad is not None and (agent.log_std.grad > 0).all()


@pytest.mark.parametrize("algo", ["ppo", "impala"])
def test_the_gaussian_policy_learns_to_remember_where_feedforward_cannot(tmp_path, algo):
    # Sign-v0: a cue ±1, a blank step, then a Box action scored 1 − |a − cue|. Measured over seeds 0-2
    # at 6k frames: exact-RTRL LRU 1.00 on every seed (PPO and R2AC), feedforward −0.01 to 0.04.
    from rtrl.api import train

    importlib.import_module("byo_envs")
    # every hyper-parameter that shapes learning is pinned, so that a change of defaults cannot change the test
    shared = dict(env="Sign-v0", num_envs=16, unroll=6, num_actors=0, lr=3e-3, lr_decay=True, discount=0.99,
                  value_weight=0.5, entropy_weight=0.0, reward_clip=1.0, hidden_size=64, encoder_width=64, stem="mlp",
                  total_frames=6000, eval_episodes=50, seed=0)
    algo_cfg = dict(ppo=dict(algo="ppo", optimizer="adam", ppo_epochs=4, ppo_minibatches=4, grad_clip=0.5,
                             clip_coef=0.2, clip_value=True, gae_lambda=0.95),
                    impala=dict(algo="impala", optimizer="rmsprop", rms_eps=0.01, rms_alpha=0.99, grad_clip=40.0,
                                batch_rollouts=1))[algo]
    greedy = {}
    for core in ("rtrl-lru", "none"):
        r = train(TrainConfig(core=core, **shared, **algo_cfg), run_dir=tmp_path / core, progress=False)
        greedy[core] = r["eval"]["greedy"]["mean"]
    assert greedy["rtrl-lru"] > 0.9 and greedy["none"] < 0.3, greedy


# -- the command line, as a new user runs it --------------------------------------------------------


def _rtrl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "rtrl.cli", *args, "--no-progress"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [
    ("--env", "CartPole-v1"),                                           # a Gymnasium id, Discrete, an actor process
    ("--env", "byo_envs:TickBox-v0"),                                   # R2AC, Box actions through an actor process
    ("--env", "byo_envs:TickBox-v0", "--algo", "ppo", "--core", "rtrl-lru"),  # the user's module, Box actions
])
def test_rtrl_train_on_a_gymnasium_id_and_a_users_module(tmp_path, args):
    preset = ("--preset", "ppo" if "ppo" in args else "small")  # R2AC with an actor process, or PPO
    p = _rtrl("train", *preset, *args, "--total-frames", "800", "--num-envs", "8", "--eval-episodes", "4",
              "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "run" / "eval.json").is_file()


@pytest.mark.parametrize("env_id, positions, velocities", [("CartPole-v1", [0, 2], [1, 3]), ("Pendulum-v1", [0, 1], [2])])
def test_classic_control_masks_keep_the_positions_or_the_velocities(env_id, positions, velocities):
    # sb3-contrib's CartPoleNoVel / PendulumNoVel keep the positions; the same seed, the same actions
    full, pos, vel = (make_env(name, 2) for name in (env_id, f"PositionOnly/{env_id}", f"VelocityOnly/{env_id}"))
    obs = [e.reset(3) for e in (full, pos, vel)]
    rng = np.random.default_rng(0)
    for _ in range(30):
        np.testing.assert_array_equal(obs[1], obs[0][:, positions])
        np.testing.assert_array_equal(obs[2], obs[0][:, velocities])
        a = rng.uniform(-1, 1, (2, 1)).astype(np.float32) if full.continuous else rng.integers(2, size=2)
        obs = [e.step(a)[0] for e in (full, pos, vel)]
    for e in (full, pos, vel):
        e.close()


def test_rtrl_envs_are_registered_with_gymnasium_on_import():
    import subprocess

    code = ("import rtrl, gymnasium as gym; e = gym.make('rtrl-Recall-v0'); o, _ = e.reset(seed=4); "
            "print(e.spec.id, o.tolist(), [e.step(0)[2] for _ in range(5)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(" ", 1)[0] == "rtrl-Recall-v0"
    assert out.stdout.strip().endswith("[False, False, False, False, True]")  # delay 3: the 5th step ends it
    import rtrl  # noqa: F401
    from gymnasium.utils.env_checker import check_env

    env = gym.make("rtrl-Recall20-v0")
    check_env(env.unwrapped)
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        assert obs[2] == 1 and obs[:2].sum() == 1  # the cue, visible
        cue, steps, rewards = int(obs[1]), 0, []
        while True:
            obs, r, terminated, truncated, _ = env.step(cue)  # remember the cue, answer it at the query
            steps, rewards = steps + 1, rewards + [r]
            assert obs[3] == (steps == 21) and not truncated
            if terminated:
                break
        assert steps == 22 and rewards[-1] == 1 and not any(rewards[:-1])
