"""The R2AC environment layer: shapes, auto-reset and done semantics, episode stats, seeding, errors.

Real envs throughout (popgym and MiniGrid tests skip if those packages are absent)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from rtrl.rl.envs import ENV_NAMES, RecallVecEnv, VecEnv, make_env

CUE0, CUE1, BLANK, QUERY = [1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]


def rollout(env: VecEnv, seed: int, steps: int, policy_seed: int = 0):
    """Random actions; returns the stacked obs (steps+1, B, ...), rewards and dones (steps, B)."""
    rng = np.random.default_rng(policy_seed)
    obs = [env.reset(seed)]
    rewards, dones = [], []
    for _ in range(steps):
        o, r, d = env.step(rng.integers(env.num_actions, size=env.num_envs))
        obs.append(o), rewards.append(r), dones.append(d)
    return np.stack(obs), np.stack(rewards), np.stack(dones)


# -- rtrl-Recall ----------------------------------------------------------------------------------


def test_recall_shapes_and_dtypes():
    env = make_env("rtrl-Recall-v0", num_envs=5)
    assert isinstance(env, RecallVecEnv) and env.delay == 3
    assert (env.num_envs, env.obs_shape, env.obs_dtype, env.num_actions) == (5, (4,), np.float32, 2)
    obs = env.reset(seed=0)
    assert obs.shape == (5, 4) and obs.dtype == np.float32
    o, r, d = env.step(np.zeros(5, np.int64))
    assert o.shape == (5, 4) and o.dtype == np.float32
    assert r.shape == (5,) and r.dtype == np.float32
    assert d.shape == (5,) and d.dtype == bool
    assert make_env("rtrl-Recall7-v0", 1).delay == 7
    assert make_env("rtrl-Recall0-v0", 1).delay == 0


@pytest.mark.parametrize("delay", [0, 3])
def test_recall_episode_structure_and_auto_reset(delay):
    env = make_env(f"rtrl-Recall{delay}-v0", num_envs=4)
    obs = env.reset(seed=1)
    for _episode in range(3):
        assert all(list(o) in (CUE0, CUE1) for o in obs)  # every episode starts with a cue
        cue = obs[:, 1].astype(np.int64)
        for t in range(delay + 2):
            obs, r, d = env.step(cue)  # the perfect policy
            last = t == delay + 1
            assert d.tolist() == [last] * 4, "done exactly on the step that answers the query"
            assert r.tolist() == [1.0 if last else 0.0] * 4
            if not last:
                want = QUERY if t == delay else BLANK
                assert obs.tolist() == [want] * 4
        # after done, obs is already the first (cue) observation of the next episode: loop checks it


def test_recall_wrong_answer_and_stats():
    env = make_env("rtrl-Recall2-v0", num_envs=2)
    obs = env.reset(seed=3)
    cue = obs[:, 1].astype(np.int64)
    for _ in range(3):
        env.step(cue)
    _, r, d = env.step(1 - cue)  # answer the query wrongly
    assert d.all() and r.tolist() == [-1.0, -1.0]
    assert env.pop_episode_stats() == [(-1.0, 4), (-1.0, 4)]
    assert env.pop_episode_stats() == []  # popped


def test_recall_perfect_and_constant_policy_returns():
    delay, B, episodes = 3, 64, 20
    env = make_env("rtrl-Recall-v0", num_envs=B)
    obs = env.reset(seed=0)
    memory = np.zeros(B, np.int64)
    for _ in range(episodes * (delay + 2)):
        memory = np.where(obs[:, 2] == 1, obs[:, 1], memory).astype(np.int64)  # store the cue when seen
        obs, _, _ = env.step(memory)
    stats = env.pop_episode_stats()
    assert len(stats) == B * episodes
    assert all(s == (1.0, delay + 2) for s in stats)

    obs = env.reset(seed=1)
    for _ in range(episodes * (delay + 2)):
        obs, _, _ = env.step(np.zeros(B, np.int64))
    returns = np.array([s[0] for s in env.pop_episode_stats()])
    assert len(returns) == B * episodes and set(returns.tolist()) <= {-1.0, 1.0}
    assert abs(returns.mean()) < 0.15  # 1280 fair coin flips: sd of the mean 0.028


def test_recall_determinism_and_per_env_seeds():
    a = rollout(make_env("rtrl-Recall-v0", 3), seed=7, steps=40)
    b = rollout(make_env("rtrl-Recall-v0", 3), seed=7, steps=40)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = rollout(make_env("rtrl-Recall-v0", 3), seed=8, steps=40)
    assert not np.array_equal(a[0], c[0]) or not np.array_equal(a[1], c[1])
    # env i is seeded seed + i: env 1 of a batch seeded 7 is a single env seeded 8
    single = make_env("rtrl-Recall-v0", 1)
    obs = single.reset(seed=8)
    batch = make_env("rtrl-Recall-v0", 3)
    bobs = batch.reset(seed=7)
    for _ in range(30):
        np.testing.assert_array_equal(obs[0], bobs[1])
        obs, _, _ = single.step(np.ones(1, np.int64))
        bobs, _, _ = batch.step(np.ones(3, np.int64))


# -- popgym ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, obs_dim, num_actions",
    [
        ("popgym-RepeatPreviousEasy-v0", 4, 4),  # Discrete(4) -> one-hot
        ("popgym-AutoencodeEasy-v0", 6, 4),  # Tuple(Discrete(2), Discrete(4))
        ("popgym-CountRecallEasy-v0", 4, 27),  # MultiDiscrete([2, 2])
        ("popgym-PositionOnlyCartPoleEasy-v0", 2, 2),  # Box(2,)
        ("popgym-BattleshipEasy-v0", 2 + 64, 64),  # MultiDiscrete([8, 8]) actions + previous action
    ],
)
def test_popgym_shapes(name, obs_dim, num_actions):
    pytest.importorskip("popgym")
    env = make_env(name, num_envs=3)
    assert (env.obs_shape, env.obs_dtype, env.num_actions) == ((obs_dim,), np.float32, num_actions)
    obs, rewards, dones = rollout(env, seed=0, steps=20)
    assert obs.shape == (21, 3, obs_dim) and obs.dtype == np.float32
    assert rewards.dtype == np.float32 and dones.dtype == bool
    env.close()


def test_popgym_one_hot_and_previous_action():
    pytest.importorskip("popgym")
    obs, _, _ = rollout(make_env("popgym-RepeatPreviousEasy-v0", 2), seed=0, steps=10)
    np.testing.assert_array_equal(obs.sum(-1), 1.0)
    env = make_env("popgym-BattleshipEasy-v0", 2)
    obs = env.reset(seed=0)
    assert not obs[:, 2:].any(), "no previous action on an episode's first observation"
    a = np.array([9, 63])  # (1, 1) and (7, 7) on the 8x8 board
    obs, _, done = env.step(a)
    assert not done.any()
    assert obs[:, 2:].argmax(-1).tolist() == a.tolist() and obs[:, 2:].sum(-1).tolist() == [1.0, 1.0]


def test_popgym_repeat_previous_random_return():
    pytest.importorskip("popgym")
    env = make_env("popgym-RepeatPreviousEasy-v0", num_envs=10)
    _, _, dones = rollout(env, seed=0, steps=5 * 51)
    stats = env.pop_episode_stats()
    assert len(stats) == 50 == dones.sum()
    assert all(length == 51 for _, length in stats)
    mean = np.mean([ret for ret, _ in stats])
    assert abs(mean + 0.5) < 0.1, mean  # sd of the mean ≈ 0.018


def test_popgym_determinism_and_per_env_seeds():
    pytest.importorskip("popgym")
    name = "popgym-RepeatFirstEasy-v0"
    a = rollout(make_env(name, 3), seed=11, steps=60)
    b = rollout(make_env(name, 3), seed=11, steps=60)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = rollout(make_env(name, 3), seed=12, steps=60)
    assert not np.array_equal(a[0], c[0])
    single = make_env(name, 1).reset(seed=12)
    np.testing.assert_array_equal(single[0], make_env(name, 3).reset(seed=11)[1])


# -- MiniGrid -------------------------------------------------------------------------------------


def test_minigrid_memory_runs_and_truncates():
    pytest.importorskip("minigrid")
    env = make_env("MiniGrid-MemoryS7-v0", num_envs=2)
    assert (env.obs_shape, env.obs_dtype, env.num_actions) == ((7 * 7 * 20 + 4,), np.float32, 7)
    obs = env.reset(seed=0)
    cells = obs[:, :-4].reshape(2, 49, 20)
    # one-hot per channel: object (11), colour (6), state (3) each exactly one 1
    for lo, hi in ((0, 11), (11, 17), (17, 20)):
        np.testing.assert_array_equal(cells[..., lo:hi].sum(-1), 1.0)
    np.testing.assert_array_equal(obs[:, -4:].sum(-1), 1.0)
    # turning left forever never ends an episode: the time limit (245 steps) truncates it -> done
    for t in range(245):
        obs, r, done = env.step(np.zeros(2, np.int64))
        assert done.tolist() == [t == 244] * 2
    assert env.pop_episode_stats() == [(0.0, 245), (0.0, 245)]
    assert all(e.unwrapped.step_count == 0 for e in env._envs), "auto-reset: obs starts a new episode"
    env.close()


# -- errors ---------------------------------------------------------------------------------------


def test_unknown_env():
    with pytest.raises(ValueError, match=r"unknown environment 'Pong-v9'.*popgym-<Task>.*MiniGrid-\*"):
        make_env("Pong-v9", 1)
    assert "rtrl-Recall-v0" in ENV_NAMES
    with pytest.raises(ValueError, match="unknown environment 'rtrl-Recallx-v0'"):
        make_env("rtrl-Recallx-v0", 1)


def test_unknown_popgym_and_minigrid_ids():
    pytest.importorskip("popgym")
    pytest.importorskip("minigrid")
    with pytest.raises(ValueError, match="unknown popgym environment 'popgym-Nope-v0'.*RepeatPreviousEasy"):
        make_env("popgym-Nope-v0", 1)
    with pytest.raises(ValueError, match="unknown MiniGrid environment 'MiniGrid-Nope-v0'.*MemoryS7"):
        make_env("MiniGrid-Nope-v0", 1)
    env = make_env("popgym-PositionOnlyPendulumEasy-v0", 1)  # continuous actions: no longer refused (issue 14)
    assert env.continuous and (env.obs_shape, env.num_actions) == ((2,), 1)


@pytest.mark.parametrize(
    "name, package", [("popgym-RepeatFirstEasy-v0", "popgym"), ("MiniGrid-MemoryS7-v0", "minigrid")]
)
def test_missing_package(monkeypatch, name, package):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import <package>` raise ImportError
    with pytest.raises(ImportError, match=f"pip install {package}"):
        make_env(name, 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_envs"):
        make_env("rtrl-Recall-v0", 0)
    env = make_env("rtrl-Recall-v0", 2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, np.int64))
    env.reset(0)
    with pytest.raises(ValueError, match=r"shape \(num_envs,\)"):
        env.step(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        env.step(np.array([0, 2]))
    with pytest.raises(ValueError, match="integers"):
        env.step(np.array([0.0, 1.0]))
