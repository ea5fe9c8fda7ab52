"""The Ray backend: a real local Ray instance, real remote actors, an actor killed mid-run."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra: pip install 'rtrl[ray]'")

from rtrl.rl.ray_actors import RayActors  # noqa: E402
from rtrl.rl.train import TrainConfig, build_agent, train  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_train_on_ray_actors(local_ray, tmp_path):
    cfg = TrainConfig(backend="ray", num_actors=2, batch_rollouts=2, num_envs=4, total_frames=1600,
                      eval_episodes=0, log_every=5)
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["frames"] == 1600 and result["updates"] == 20


def test_a_killed_ray_actor_is_replaced_and_streams_stay_in_order(local_ray):
    from rtrl.rl.envs import make_env

    cfg = TrainConfig(backend="ray", num_actors=2, num_envs=3, unroll=4)
    probe = make_env(cfg.env, 1)
    actors = RayActors(cfg, build_agent(cfg, probe))
    seen = {}
    for i in range(12):
        if i == 4:
            ray.kill(actors.actors[0])
        rollouts, _ = actors.get(2)
        assert len({r.streams[0].item() for r in rollouts}) == 2  # never two rollouts of one actor
        for r in rollouts:
            streams = tuple(r.streams.tolist())
            seen.setdefault(streams, []).append(r)
    assert actors.restarts >= 1
    assert set(seen) == {(0, 1, 2), (3, 4, 5)}
    for rs in seen.values():  # consecutive rollouts of a stream continue each other, except at a restart
        continuing = sum(bool((a.obs[-1] == b.obs[0]).all()) for a, b in zip(rs, rs[1:]))
        assert continuing >= len(rs) - 3
    actors.close()
