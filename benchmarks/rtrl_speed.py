"""Per-segment forward+backward time and peak memory of one eLSTM layer, three ways:

  (a) per-step RTRL, the paper's way: an autograd pass for the readout's gradients, then a
      Python loop of T sensitivity updates over (B, N, D) tensors (our own code, same maths);
  (b) rtrl.nn.ELSTM(learning="rtrl"): exact chunked RTRL (truncated BPTT + carry terms);
  (c) rtrl.nn.ELSTM(learning="bptt") with a detached state: truncated BPTT alone, no carry;
  (d) torch.nn.LSTM with truncated BPTT, same N, for reference.

All run on the same inputs in one process, interleaved rep by rep, and the script prints the
ratios a/b and b/c from the medians.

A second table (the bar of issue 16) times every module of ``rtrl.nn.MODULES`` (``--cells``) *as
a user calls it*: ``m = MODULES[name](D, N, learning=rule)``, then per segment ``m.zero_grad()``
(its default, ``set_to_none``), ``y, state = m(x, state)`` with the state carried from the previous
segment (detached for truncated BPTT), ``loss = (y**2).sum()``, ``loss.backward()``; exact RTRL
against the same module's truncated BPTT, interleaved rep by rep. It also times alone the one
GEMM that exact RTRL adds (the carry-out): ``(c + gemm)/c`` is the ratio RTRL would have if that
GEMM were all its extra work, a floor for this algorithm. ``--cell-size`` is ``hidden_size`` (the
RTU's ``hidden_size/2`` complex units give ``hidden_size`` features).

A third table (``--inference``) times the actors' path: one step (``T = 1``) under
``torch.no_grad()`` with a state without sensitivities, for each module and for
``rtrl.rl.agent.Agent.act``, at N = 64 and B in {16, 128, 512}, on one thread (the trainers'
default). Peak memory is the rise of the process's peak resident set (CPU; each method in a
fresh subprocess) or of torch.cuda.max_memory_allocated (CUDA).

    python benchmarks/rtrl_speed.py            # the paper's RL sizes: N in {256, 512}, T in {50, 100}
    python benchmarks/rtrl_speed.py --quick    # one small size, a few reps
    python benchmarks/rtrl_speed.py --no-elstm --no-memory --reps 15   # the modules table alone (the bar)
    python benchmarks/rtrl_speed.py --no-elstm --no-memory --cells '' --inference   # the actors' path
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time

import torch

from rtrl.nn import ELSTM, MODULES
from rtrl.utils import tune_cpu_allocator

METHODS = ("a_per_step", "b_chunked", "c_tbptt", "d_nn_lstm")


class PerStepRTRL:
    """The paper's learner step for one eLSTM layer (its ``forward_learner`` + ``compute_grad_rtrl``)."""

    def __init__(self, layer: ELSTM):
        self.layer = layer

    def initial_state(self, batch_size: int):
        return self.layer.initial_state(batch_size)

    def __call__(self, x, state):
        layer, cell = self.layer, self.layer.cell
        T, B, D = x.shape
        K, N = cell.num_gates, cell.hidden_size
        w, b, theta = cell.weight_ih, cell.bias, cell.weight_hh.detach()
        p = torch.nn.functional.linear(x, w.detach(), b.detach()).unflatten(-1, (K, N))
        c, cs, c_prevs = state.c, [], []
        with torch.no_grad():  # x needs no gradient here, so the chain keeps no graph (as cheap as (a) gets)
            for t in range(T):
                c_prevs.append(c)
                c = cell.step(c, p[t], theta)
                cs.append(c)
        c_seq = torch.stack(cs).requires_grad_(True)  # e_t = ∂L/∂c_t through the readout only
        y = layer._readout(x, c_seq)

        def finish():
            e = c_seq.grad
            s_w, s_b, s_th = (s.clone() for s in state.sensitivities)
            s_w = s_w.view(B, D, K, N)
            gw, gb, gth = x.new_zeros(D, K, N), x.new_zeros(K, N), torch.zeros_like(theta)
            with torch.no_grad():
                for t in range(T):
                    a, u, v = cell.local_derivatives(c_prevs[t], p[t], theta)
                    s_w = a[:, None, None, :] * s_w + x[t][:, :, None, None] * u[:, None]
                    s_b = a.repeat(1, K) * s_b + u.flatten(1)
                    s_th = a[:, None, :] * s_th + v
                    gw += torch.einsum("bn,bdkn->dkn", e[t], s_w)
                    gb += (e[t][:, None, :] * s_b.view(B, K, N)).sum(0)
                    gth += (e[t][:, None, :] * s_th).sum(0)
            w.grad = gw.reshape(D, K * N).t().contiguous()
            b.grad, cell.weight_hh.grad = gb.flatten(), gth

        return y, finish


def one_segment(method: str, model, x, state):
    if method == "a_per_step":
        y, finish = model(x, state)
        (y * y).sum().backward()
        finish()
    elif method == "d_nn_lstm":
        y, _ = model(x, state)
        (y * y).sum().backward()
    else:
        y, _ = model(x, state)
        (y * y).sum().backward()


def build(method: str, n: int, d: int, b: int, device: str):
    torch.manual_seed(0)
    if method == "d_nn_lstm":
        model = torch.nn.LSTM(d, n).to(device)
        zeros = torch.zeros(1, b, n, device=device)
        return model, (zeros, zeros)
    layer = ELSTM(d, n, learning="bptt" if method == "c_tbptt" else "rtrl").to(device)
    model = PerStepRTRL(layer) if method == "a_per_step" else layer
    return model, model.initial_state(b)


def check_same_gradients(device: str) -> None:
    """Refuse to time anything unless (a) and (b) give the same gradients and sensitivities."""
    x = torch.randn(7, 3, 5, device=device, dtype=torch.float64)
    grads = []
    for m in ("a_per_step", "b_chunked"):
        model, state = build(m, 4, 5, 3, device)
        layer = model.layer if m == "a_per_step" else model
        layer.double()
        state = layer.initial_state(3)
        one_segment(m, model, x, state)
        grads.append([q.grad for q in layer.cell.parameters()])
    for g_a, g_b in zip(*grads):
        if not torch.allclose(g_a, g_b, rtol=1e-9, atol=1e-12):
            raise SystemExit("per-step and chunked RTRL disagree: the benchmark would compare different maths")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_methods(n, d, b, t, reps, device, methods):
    x = torch.randn(t, b, d, device=device)
    built = {m: build(m, n, d, b, device) for m in methods}
    return time_runs({m: functools.partial(one_segment, m, *built[m][:1], x, built[m][1]) for m in methods},
                     reps, device)


def time_runs(runs, reps, device):
    """Median seconds of each ``runs[key]()`` (no arguments), interleaved rep by rep."""
    times = {k: [] for k in runs}
    for rep in range(reps + 1):  # rep 0 warms up
        for k, run in runs.items():
            sync(device)
            t0 = time.perf_counter()
            run()
            sync(device)
            if rep:
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def as_a_user(module, x, rule: str):
    """One segment after another as a user runs them: returns a function that runs the next one.

    ``zero_grad()`` with its default, the state carried over (detached for truncated BPTT),
    ``loss = Σ y²``, ``backward()``."""
    holder = [module.initial_state(x.shape[1])]

    def run():
        module.zero_grad()
        state = holder[0] if rule == "rtrl" else holder[0].detach()
        y, holder[0] = module(x, state)
        loss = (y**2).sum()
        loss.backward()

    return run


def carry_gemm(module, x):
    """The one GEMM exact RTRL adds to truncated BPTT, alone: the carry-out ``Σ_t x_t ⊗ (Λ_t u_t)``
    per stream, ``(B, D, T) @ (B, T, M)`` with ``M`` the real width of the carried ``S^W``
    (complex sensitivities count twice). Returns a function that runs it once on random factors."""
    s_w = module.initial_state(x.shape[1], sensitivities=True).sensitivities.weight_ih
    width = s_w.shape[-1] * (2 if s_w.is_complex() else 1)
    xt = x.detach().permute(1, 2, 0)
    factors = torch.randn(x.shape[0], x.shape[1], width, device=x.device, dtype=x.dtype).transpose(0, 1)
    return lambda: torch.bmm(xt, factors)


def carry_floor(module, x):
    """What any exact RTRL of this form must add to truncated BPTT, alone: the GEMM, the update
    ``S_T = Λ_0 ⊙ S_0 + GEMM`` into a reused block (one read of ``S_0``, one write of ``S_T``) and
    the carry-in ``Σ_b e_b ⊙ S_0[b]`` of backward (a second read of ``S_0``), on random factors of
    the module's shapes, with the engine's own routines. Returns a function that runs it once
    (``None`` for an engine without these routines, e.g. an older checkout)."""
    try:
        from rtrl.exact import _add_outer_sum_, _carry_in_grads
    except ImportError:
        return None
    T, B, _ = x.shape
    cell = module.cell
    s_w, s_b, _ = (torch.randn_like(s) for s in module.initial_state(B, sensitivities=True).sensitivities)
    shared = cell.linear_terms(torch.zeros(1, 1, cell.num_gates, cell.hidden_size), cell.weight_hh) is not None
    lu = torch.randn(T, 1 if shared else B, s_w.shape[-1], dtype=s_w.dtype)  # an LTI cell's Λu is shared
    lam0 = torch.randn(1 if shared else B, 1, s_w.shape[-1], dtype=s_w.dtype)
    e = torch.randn(B, cell.hidden_size, dtype=s_w.dtype)
    out, xd = torch.empty_like(s_w), x.detach()

    def run():
        torch.mul(s_w, lam0, out=out)
        _add_outer_sum_(out, xd, lu)
        _carry_in_grads(s_w, s_b, e, cell.num_gates, cell.complex_input)

    return run


def peak_memory(method, n, d, b, t, device, malloc) -> float:
    """Peak memory rise (MB) over two segments, measured in a fresh process."""
    cmd = [sys.executable, __file__, "--peak-of", method, str(n), str(d), str(b), str(t), "--device", device,
           "--malloc", malloc]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _peak_here(method, n, d, b, t, device) -> float:
    x = torch.randn(t, b, d, device=device)
    model, state = build(method, n, d, b, device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for _ in range(2):
            one_segment(method, model, x, state)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak resident set (Linux)
        f.write("5")
    base = _rss_kb("VmRSS")
    for _ in range(2):
        one_segment(method, model, x, state)
    return (_rss_kb("VmHWM") - base) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N=256, T=50, 3 reps")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--input-size", type=int, default=257)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--no-elstm", action="store_true", help="skip the eLSTM table (a-d)")
    ap.add_argument("--cells", default=",".join(MODULES), help="comma-separated rtrl.nn.MODULES for the "
                    "modules table (exact RTRL vs the same module's truncated BPTT, as a user calls them), or ''")
    ap.add_argument("--cell-size", type=int, default=512, help="hidden_size of the cells table")
    ap.add_argument("--input-grad", action="store_true", help="cells table: x requires grad (a layer above others)")
    ap.add_argument("--cell-steps", type=int, default=100, help="segment length T of the cells table")
    ap.add_argument("--malloc", choices=("tuned", "default"), default="default",
                    help="tuned: rtrl.utils.tune_cpu_allocator() for every method (CPU); default: glibc as is "
                    "(what a user gets, and what the bar is measured with)")
    ap.add_argument("--inference", action="store_true", help="time the actors' path (T=1, no_grad, N=64)")
    ap.add_argument("--peak-of", nargs=5, help=argparse.SUPPRESS)  # internal: one memory probe
    args = ap.parse_args()
    tuned = args.malloc == "tuned" and tune_cpu_allocator()
    if args.peak_of:
        m, *dims = args.peak_of
        print(json.dumps(_peak_here(m, *map(int, dims), args.device)))
        return
    check_same_gradients(args.device)
    sizes = [(256, 50)] if args.quick else [(256, 50), (256, 100), (512, 50), (512, 100)]
    reps = 3 if args.quick else args.reps
    b, d = args.batch, args.input_size
    print(f"device={args.device} threads={torch.get_num_threads()} B={b} D={d} float32, median of {reps} reps, "
          f"allocator {'tuned' if tuned else 'default'}")
    header = f"{'N':>4} {'T':>4} | " + " ".join(f"{m:>11}" for m in METHODS) + " |   a/b   b/c | peak MB " + "/".join(
        m[0] for m in METHODS
    )
    if not args.no_elstm:
        print(header)
        print("-" * len(header))
    for n, t in ([] if args.no_elstm else sizes):
        med = time_methods(n, d, b, t, reps, args.device, METHODS)
        mem = "" if args.no_memory else " / ".join(
            f"{peak_memory(m, n, d, b, t, args.device, args.malloc):.0f}" for m in METHODS
        )
        ratios = f"{med['a_per_step'] / med['b_chunked']:5.1f} {med['b_chunked'] / med['c_tbptt']:5.2f}"
        print(f"{n:>4} {t:>4} | " + " ".join(f"{med[m] * 1e3:9.1f}ms" for m in METHODS) + f" | {ratios} | {mem}")
    cells = [c for c in args.cells.split(",") if c]
    if cells:
        n, t = args.cell_size, args.cell_steps
        print(f"\nmodules as a user calls them (zero_grad, state carried, loss = sum y^2), "
              f"x {'with' if args.input_grad else 'without'} gradient, allocator {'tuned' if tuned else 'default'}")
        print(f"{'cell':>10} {'N':>4} {'T':>4} | {'b_chunked':>11} {'c_tbptt':>11} {'carry_gemm':>11} "
              f"{'floor':>11} |   b/c (c+gemm)/c (c+floor)/c")
        # --input-grad: x needs a gradient, as for a layer above a stem (R2AC); both rules add ∇x
        x = torch.randn(t, b, d, device=args.device, requires_grad=args.input_grad)
        runs = {}
        for name in cells:
            for rule in ("rtrl", "bptt"):
                torch.manual_seed(0)
                m = MODULES[name](d, n, learning=rule).to(args.device)
                runs[name, rule] = as_a_user(m, x, rule)
            runs[name, "gemm"] = carry_gemm(m, x)
            floor = carry_floor(m, x) if args.device == "cpu" else None
            if floor is not None:
                runs[name, "floor"] = floor
        med = time_runs(runs, reps, args.device)
        for name in cells:
            rt, bp, gemm = med[name, "rtrl"], med[name, "bptt"], med[name, "gemm"]
            floor = med.get((name, "floor"), float("nan"))
            print(f"{name:>10} {n:>4} {t:>4} | {rt * 1e3:9.1f}ms {bp * 1e3:9.1f}ms {gemm * 1e3:9.1f}ms "
                  f"{floor * 1e3:9.1f}ms | {rt / bp:5.2f} {(bp + gemm) / bp:9.2f} {(bp + floor) / bp:11.2f}")

    if args.inference:
        inference_table(args.device, reps)


def inference_table(device: str, reps: int, n: int = 64, d: int = 65, calls: int = 200) -> None:
    """Microseconds per call of the actors' path: one step under ``no_grad``, no sensitivities."""
    from rtrl.rl.agent import Agent

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    batches = (16, 128, 512)
    runs = {}
    for b in batches:
        x = torch.randn(1, b, d, device=device)
        for name, cls in MODULES.items():
            torch.manual_seed(0)
            m = cls(d, n, learning="rtrl").to(device)
            runs[name, b] = _steps(lambda s, m=m, x=x: m(x, s)[1], m.initial_state(b, sensitivities=False), calls)
        for core in ("rtrl-elstm", "rtrl-lru", "rtrl-rtu"):
            torch.manual_seed(0)
            agent = Agent((4,), 4, core=core, hidden_size=n).to(device)
            obs, rew = torch.randn(b, 4, device=device), torch.zeros(b, device=device)
            done = torch.zeros(b, dtype=torch.bool, device=device)
            runs[f"act {core}", b] = _steps(lambda s, a=agent, o=obs, r=rew, dn=done: a.act(o, r, dn, s)[2],
                                            agent.initial_state(b, learner=False), calls)
    med = time_runs(runs, reps, device)
    torch.set_num_threads(threads)
    print(f"\ninference (actors): one step, no_grad, no sensitivities, N={n}, module D={d}, 1 thread; "
          f"microseconds per call, median of {reps} reps of {calls} calls")
    names = list(dict.fromkeys(k for k, _ in runs))
    print(f"{'':>16} | " + " ".join(f"{'B=' + str(b):>8}" for b in batches))
    for name in names:
        print(f"{name:>16} | " + " ".join(f"{med[name, b] / calls * 1e6:8.1f}" for b in batches))


def _steps(step, state, calls: int):
    """A function that runs ``state = step(state)`` ``calls`` times under ``no_grad``."""
    holder = [state]

    def run():
        with torch.no_grad():
            for _ in range(calls):
                holder[0] = step(holder[0])

    return run


if __name__ == "__main__":
    main()
