"""The Ray backend: a real local Ray instance, real remote actors, an actor killed mid-run."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra: pip install 'rtrl[ray]'")

from rtrl.rl.ray_actors import RayActors  # noqa: E402
from rtrl.rl.train import TrainConfig, build_agent, train  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    import os
    from pathlib import Path

    tests = str(Path(__file__).parent)  # byo_envs, for the Ray workers too
    path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
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


def test_a_ray_actor_whose_env_keeps_raising_is_replaced_a_bounded_number_of_times(local_ray, capsys):
    """Before: the env's exception (a RayTaskError) escaped the learner as a traceback."""
    pytest.importorskip("gymnasium")
    import importlib

    from rtrl.rl.actors import ActorError
    from rtrl.rl.envs import make_env

    importlib.import_module("byo_envs")
    cfg = TrainConfig(backend="ray", env="byo_envs:FaultyRaise-v0", num_actors=1, num_envs=2, unroll=3,
                      actor_restarts=1)
    probe = make_env(cfg.env, 1)
    actors = RayActors(cfg, build_agent(cfg, probe))
    try:
        with pytest.raises(ActorError, match=r"Ray actor 0 failed 2 times in a row \(last: RuntimeError: the "
                                             r"simulator crashed\)"):
            actors.get(1)
        assert actors.restarts == 1
        err = capsys.readouterr().err
        assert err.count("Traceback (most recent call last)") == 1 and "restarting it in 1 s" in err
    finally:
        actors.close()


def _ray_actor_pids() -> list[int]:
    from pathlib import Path

    pids = []
    for d in Path("/proc").iterdir():
        try:
            if (d / "cmdline").read_bytes().startswith(b"ray::_ActorWorker") and (d / "stat").read_text().rsplit(
                    ")", 1)[1].split()[0] != "Z":
                pids.append(int(d.name))
        except (OSError, IndexError):
            continue
    return pids


def test_kill_9_of_a_learner_ends_its_ray_actors(local_ray, tmp_path):
    """Ray ties a (non-detached) actor's life to its owner's: when the driver dies, even by
    ``kill -9``, the cluster kills its actors. The learner joins this module's cluster."""
    import signal
    import subprocess
    import sys
    import time

    address = ray.get_runtime_context().gcs_address  # ray.init set RAY_AUTH_MODE for its children too
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "rtrl.cli", "train", "--preset", "small", "--backend", "ray",
                             "--ray-address", address,
                             "--num-actors", "2", "--num-envs", "4", "--total-frames", "10000000", "--log-every", "5",
                             "--eval-episodes", "0", "--run-dir", str(run), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, pids = time.time() + 120, []
        while time.time() < deadline and not ((run / "metrics.csv").exists() and len(pids := _ray_actor_pids()) == 2):
            time.sleep(0.2)
        assert len(pids) == 2, "the learner's Ray actors did not start"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.time() + 15
        while time.time() < deadline and set(pids) & set(_ray_actor_pids()):
            time.sleep(0.2)
        assert not set(pids) & set(_ray_actor_pids()), "Ray actors outlived their learner"
    finally:
        proc.kill()
