"""The same maths and the same training on a CUDA device as on the CPU.

Every test here needs a CUDA device and is skipped, with the reason, where there is none (CI has
none; `python benchmarks/device_check.py` runs them on a machine with a GPU). The chain of proof:
the CPU suite shows exact RTRL equal to autograd BPTT; these show CUDA equal to both.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from rtrl.nn import MODULES
from rtrl.rl.agent import Agent
from rtrl.rl.learner import Learner, LearnerConfig, Rollout
from rtrl.rl.train import TrainConfig, train
from rtrl.runs import load_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here (this PyTorch: "
                                       f"{torch.__version__}); run on a machine with a GPU")
CUDA = torch.device("cuda")
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
        assert s_gpu.device.type == "cuda" and _rel_err(s_gpu.cpu(), s_cpu) < 1e-12


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
        assert q.device.type == "cuda" and _rel_err(q.cpu(), p) < 1e-10, n


@pytest.mark.parametrize("algo", ["impala", "ppo"])
def test_a_run_resumes_across_devices(tmp_path, algo):
    base = TrainConfig(algo=algo, core="rtrl-lru", num_envs=4, unroll=5, total_frames=200, eval_episodes=0,
                       log_every=1, checkpoint_every=1, ppo_minibatches=2)
    kind = "r2ac" if algo == "impala" else "ppo"
    first = train(dataclasses.replace(base, device="cuda"), tmp_path / "run", progress=False)
    ckpt = load_checkpoint(tmp_path / "run/checkpoints/latest.pt", kind)
    assert all(t.device.type == "cpu" for t in ckpt["agent"].values())  # loaded onto the CPU, whatever saved it
    second = train(dataclasses.replace(base, device="cpu", total_frames=400), tmp_path / "run", resume=True,
                   progress=False)
    third = train(dataclasses.replace(base, device="cuda", total_frames=600), tmp_path / "run", resume=True,
                  progress=False)
    assert (first["frames"], second["frames"], third["frames"]) == (200, 400, 600)
    assert third["updates"] == 3 * first["updates"]
