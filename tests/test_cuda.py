"""The same maths and the same training on a CUDA device as on the CPU.

Every test here needs a CUDA device and is skipped, with the reason, where there is none (CI has
none; `python benchmarks/device_check.py` runs them on a machine with a GPU). The chain of proof:
the CPU suite shows exact RTRL equal to autograd BPTT; these show CUDA equal to both: the exact
gradients, R2AC's and PPO's updates, the copy task's training, a run resumed across devices (its
checkpoints CPU tensors, the CUDA RNG saved beside the CPU's), and a CUDA-trained run's export.

``RTRL_TEST_DEVICE=cpu`` runs them with the CPU in the device's place (``device_check.py --device
cpu`` does): every comparison is then trivial, but each test's own code runs, so that the one
chance on a GPU is not lost to a test that cannot run.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import os

import pytest
import torch

from rtrl.nn import MODULES
from rtrl.rl.agent import Agent
from rtrl.rl.learner import Learner, LearnerConfig, Rollout
from rtrl.rl.train import TrainConfig, train
from rtrl.runs import load_checkpoint

CUDA = torch.device(os.environ.get("RTRL_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(),
                                reason="no CUDA device here (this PyTorch: "
                                       f"{torch.__version__}); run on a machine with a GPU")
T, B, D, N = 45, 3, 5, 4
SEGMENTS = [(0, 7), (7, 8), (8, 30), (30, 45)]  # uneven, one of length 1, one of 22 steps


def _problem(name: str, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    module = MODULES[name](D, N).double()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, D, dtype=torch.float64, generator=g)
    reset = torch.rand(T, B, generator=g) < 0.1
    reset[8, 0] = True  # a reset exactly at a segment boundary
    target = torch.randn(T, B, module.hidden_size, dtype=torch.float64, generator=g)
    return module.to(device), x.to(device), reset.to(device), target.to(device)


def _loss(y, target):
    return ((y - target) ** 2).sum() + (y**3).sum()


def _rtrl_grads(module, x, reset, target, segments, reset_none=False):
    module.zero_grad()
    state = module.initial_state(B)
    for a, b in segments:
        y, state = module(x[a:b], state, None if reset_none else reset[a:b])
        _loss(y, target[a:b]).backward()
    return {n: q.grad.clone() for n, q in module.named_parameters()}, state


def _bptt_grads(module, x, reset, target, reset_none=False):
    """Autograd through the cell's own step over the whole sequence, on the module's device."""
    module.zero_grad()
    cell = module.cell
    p = torch.nn.functional.linear(x, cell.weight_ih, cell.bias).unflatten(-1, (cell.num_gates, cell.hidden_size))
    c, cs = module.initial_state(B, sensitivities=False).c, []
    for t in range(T):
        if not reset_none:
            c = c * (~reset[t]).to(x.dtype)[:, None]
        c = cell.step(c, p[t], cell.weight_hh)
        cs.append(c)
    _loss(module._readout(x, torch.stack(cs)), target).backward()
    return {n: q.grad.clone() for n, q in module.named_parameters()}


def _rel_err(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


@pytest.mark.parametrize("reset_none", [False, True])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_exact_rtrl_on_cuda_equals_bptt_and_the_cpu(name, reset_none):
    module, x, reset, target = _problem(name, CUDA)
    ref = _bptt_grads(module, x, reset, target, reset_none)
    got, state = _rtrl_grads(module, x, reset, target, SEGMENTS, reset_none)
    online, _ = _rtrl_grads(module, x, reset, target, [(t, t + 1) for t in range(T)], reset_none)
    cpu_module = copy.deepcopy(module).cpu()
    cpu, cpu_state = _rtrl_grads(cpu_module, x.cpu(), reset.cpu(), target.cpu(), SEGMENTS, reset_none)
    for n in ref:
        assert _rel_err(got[n], ref[n]) < 1e-9, n
        assert _rel_err(online[n], ref[n]) < 1e-9, n
        assert _rel_err(got[n].cpu(), cpu[n]) < 1e-12, n
    for s_gpu, s_cpu in zip(state.sensitivities, cpu_state.sensitivities):
        assert s_gpu.device.type == CUDA.type and _rel_err(s_gpu.cpu(), s_cpu) < 1e-12


def test_inference_path_on_cuda():
    for name in MODULES:
        module, x, reset, _ = _problem(name, CUDA)
        y_train, _ = module(x, module.initial_state(B), reset)
        with torch.no_grad():
            y_inf, _ = module(x, module.initial_state(B, sensitivities=False), reset)
        assert torch.allclose(y_train, y_inf, atol=1e-12, rtol=0), name


def _rollout(agent: Agent, M: int, streams: list[int], seed: int) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    n = len(streams)
    done = torch.rand(M + 1, n, generator=g) < 0.2
    done[0] = True
    return Rollout(obs=torch.randn(M + 1, n, 4, generator=g, dtype=torch.float64),
                   reward=torch.randn(M + 1, n, generator=g, dtype=torch.float64), done=done,
                   action=torch.randint(0, 3, (M, n), generator=g),
                   logits=torch.randn(M, n, 3, generator=g, dtype=torch.float64),
                   streams=torch.tensor(streams), state=agent.initial_state(n, learner=False))


@pytest.mark.parametrize("core", ["rtrl-elstm", "rtrl-lru", "rtrl-rtu", "lstm", "snap1-lstm"])
def test_r2ac_updates_on_cuda_equal_the_cpu(core):
    torch.manual_seed(0)
    cpu_agent = Agent((4,), 3, core=core, hidden_size=6, encoder_width=8).double()
    gpu_agent = copy.deepcopy(cpu_agent).to(CUDA)
    cfg = LearnerConfig(lr=1e-2)
    learners = [Learner(cpu_agent, cfg, num_streams=4), Learner(gpu_agent, cfg, num_streams=4)]
    for k, streams in enumerate([[0, 1], [2, 3], [1, 0], [2, 3]]):  # the banks advance too
        rollout = _rollout(cpu_agent, 5, streams, seed=k)
        stats = [learner.update(rollout) for learner in learners]
        assert stats[0]["loss"] == pytest.approx(stats[1]["loss"], rel=1e-10)
    for (n, p), q in zip(cpu_agent.named_parameters(), gpu_agent.parameters()):
        assert q.device.type == CUDA.type and _rel_err(q.cpu(), p) < 1e-10, n


def _segment(agent: Agent, T: int, B: int, seed: int):
    from rtrl.rl.ppo import Segment

    g = torch.Generator().manual_seed(seed)
    done = torch.rand(T + 1, B, generator=g) < 0.2
    done[0] = True
    return Segment(obs=torch.randn(T + 1, B, 4, generator=g, dtype=torch.float64),
                   reward=torch.randn(T + 1, B, generator=g, dtype=torch.float64), done=done,
                   action=torch.randint(0, 3, (T, B), generator=g),
                   logprob=-torch.rand(T, B, generator=g, dtype=torch.float64) - 0.5,
                   value=torch.randn(T + 1, B, generator=g, dtype=torch.float64),
                   state=agent.initial_state(B, learner=True))


@pytest.mark.parametrize("core", ["rtrl-elstm", "rtrl-lru", "lstm"])
def test_ppo_updates_on_cuda_equal_the_cpu(core):
    """Minibatches by env (a permutation drawn on the CPU either way), epochs, the carried state."""
    from rtrl.rl.ppo import PPO

    torch.manual_seed(0)
    cpu_agent = Agent((4,), 3, core=core, hidden_size=6, encoder_width=8).double()
    gpu_agent = copy.deepcopy(cpu_agent).to(CUDA)
    cfg = TrainConfig(algo="ppo", optimizer="adam", lr=1e-2, ppo_epochs=2, ppo_minibatches=2, num_envs=4)
    ppos = [PPO(cpu_agent, cfg), PPO(gpu_agent, cfg)]
    states = [None, None]
    for k in range(3):
        for i, (ppo, agent) in enumerate(zip(ppos, (cpu_agent, gpu_agent))):
            seg = _segment(cpu_agent, 5, 4, seed=k)
            if states[i] is not None:  # the state carried from the previous update, where that update left it
                seg.state = states[i]
            torch.manual_seed(100 + k)  # the same minibatch permutations on both
            stats, states[i] = ppo.update(seg)
            if i == 0:
                ref = stats
        assert stats["loss"] == pytest.approx(ref["loss"], rel=1e-9)
    for (n, p), q in zip(cpu_agent.named_parameters(), gpu_agent.parameters()):
        assert q.device.type == CUDA.type and _rel_err(q.cpu(), p) < 1e-9, n
    assert _rel_err(states[1].c.cpu(), states[0].c) < 1e-9


@pytest.mark.parametrize("method", ["rtrl", "snap1", "tbptt"])
def test_the_copy_task_trains_on_cuda_as_on_the_cpu(tmp_path, method):
    """float32 both: the loss curve alike to rounding (not bit for bit), the same number of updates."""
    from rtrl.tasks.copy import CopyConfig, train_copy

    cfg = CopyConfig(method=method, level=2, hidden_size=16, batch_size=16, eval_every=2, max_sequences=128,
                     valid_size=64, test_size=64, target_accuracy=2.0)
    results, losses = [], []
    for i, dev in enumerate(("cpu", str(CUDA))):
        results.append(train_copy(dataclasses.replace(cfg, device=dev), tmp_path / f"run{i}", progress=False))
        with open(tmp_path / f"run{i}" / "metrics.csv") as f:
            losses.append([float(r["loss"]) for r in csv.DictReader(f)])
    assert results[0]["updates"] == results[1]["updates"] and len(losses[0]) == len(losses[1]) == 4
    for a, b in zip(*losses):
        assert b == pytest.approx(a, rel=1e-3)


@pytest.mark.parametrize("algo", ["impala", "ppo"])
def test_a_run_resumes_across_devices(tmp_path, algo):
    from rtrl.runs import set_rng_state

    base = TrainConfig(algo=algo, core="rtrl-lru", num_envs=4, unroll=5, total_frames=200, eval_episodes=0,
                       log_every=1, checkpoint_every=1, ppo_minibatches=2)
    kind = "r2ac" if algo == "impala" else "ppo"
    first = train(dataclasses.replace(base, device=str(CUDA)), tmp_path / "run", progress=False)
    ckpt = load_checkpoint(tmp_path / "run/checkpoints/latest.pt", kind)
    raw = torch.load(tmp_path / "run/checkpoints/latest.pt", weights_only=True)  # no map_location: as saved
    assert all(t.device.type == "cpu" for t in raw["agent"].values())  # saved as CPU tensors
    if CUDA.type == "cuda":  # the CUDA RNG beside the CPU's, and restored on resume
        assert len(ckpt["cuda_rng"]) == torch.cuda.device_count()
        set_rng_state(ckpt)
        a = torch.rand(3, device=CUDA)
        set_rng_state(ckpt)
        assert torch.equal(a, torch.rand(3, device=CUDA))
    second = train(dataclasses.replace(base, device="cpu", total_frames=400), tmp_path / "run", resume=True,
                   progress=False)
    third = train(dataclasses.replace(base, device=str(CUDA), total_frames=600), tmp_path / "run",
                  resume=True, progress=False)
    assert (first["frames"], second["frames"], third["frames"]) == (200, 400, 600)
    assert third["updates"] == 3 * first["updates"]


def test_a_cuda_trained_run_exports_and_acts_on_the_cpu(tmp_path):
    from rtrl.rl.policy import export, load_agent

    cfg = TrainConfig(core="rtrl-lru", num_envs=4, num_actors=0, unroll=5, total_frames=200, eval_episodes=0,
                      device=str(CUDA))
    train(cfg, tmp_path / "run", progress=False)
    policy = load_agent(tmp_path / "run")
    g = torch.Generator().manual_seed(0)
    obs, reward = torch.rand(3, 4, generator=g), torch.randn(3, generator=g)
    first, state = torch.tensor([1.0, 0.0, 1.0]), torch.randn(3, policy.state_size, generator=g)
    want = policy(obs, reward, first, state)
    scripted = torch.jit.load(str(export(tmp_path / "run", "torchscript")))
    got = scripted(obs, reward, first, state)
    for a, b in zip(got, want):
        assert a.device.type == "cpu" and torch.allclose(a.float(), b.float(), atol=1e-6)
    try:
        import onnxruntime as ort
    except ImportError:
        return
    sess = ort.InferenceSession(str(export(tmp_path / "run", "onnx")))
    feed = dict(obs=obs.numpy(), prev_reward=reward.numpy(), first=first.numpy(), state=state.numpy())
    out = sess.run(None, feed)
    for a, b in zip(out, want):
        assert torch.allclose(torch.as_tensor(a).float(), b.float(), atol=1e-5)
