"""The complexity study: what exact RTRL costs per step, dense versus element-wise, and versus BPTT.

Four learners of one recurrent layer, each processing a sequence and backpropagating a loss on
every step (``Σ_t ‖y_t‖²``), float32 on the CPU:

  dense_rnn   rtrl.dense.DenseRTRLRNN: a fully recurrent tanh RNN, full RTRL, one step per
              segment (fully online). Sensitivities (B, N, N, D+N+1): O(N³) memory, and the
              product of the N×N recurrent Jacobian with them costs O(N²·P) = O(N⁴) per step.
  dense_lstm  rtrl.dense.DenseRTRLLSTM: the same for a dense LSTM (4 gates, state [h; c]).
  elstm_rtrl  rtrl.nn.ELSTM(learning="rtrl"): exact RTRL for the element-wise LSTM, one step per
              segment. Sensitivities (B, D, 2N) + (B, 2N) + (B, 2, N): O(N·D) time and memory.
  elstm_bptt  rtrl.nn.ELSTM(learning="bptt") over the whole sequence at once: the graph of all
              T steps is held until backward, so memory grows with T.

The eLSTM runs without its output gate (``output_gate=False``, so ``y = c``): the gate is a
dense feed-forward (N+D)→N layer, O(N²) per step for every learning rule alike and carrying no
sensitivities, so it would only hide the recurrence's own cost at large N (``--output-gate``
puts it back).

Two sweeps:
  1. N grows at fixed D and B: time per step and memory. The dense learners stop at the first
     N whose predicted time per step (×2⁴ per doubling) exceeds the budget.
  2. T grows at fixed N: BPTT's memory grows with T; RTRL's (online, segments of 1 or of a small
     chunk) stays flat.

Memory, three ways: ``sens MB`` the bytes of the sensitivity tensors the learner carries
(analytic, checked against the real tensors); ``saved MB`` the bytes autograd holds for backward
(counted by ``torch.autograd.graph.saved_tensors_hooks``, the largest segment's); ``peak MB`` the
measured rise of the peak resident set (VmHWM after writing 5 to /proc/self/clear_refs) while
building the layer and running the sequence, in a separate process with glibc's default
allocator, trimmed between configurations. Inputs are created before the baseline and excluded.

Growth exponents: least squares on log-log over the largest sizes only (Python and dispatch
overheads dominate small sizes). For the dense RNN the theory's local slope at size N is
3 + N/(N+D+1) for time (N²·P with P = N(N+D+1)) and 2 + N/(N+D+1) for memory: it tends to 4 and 3.

    python benchmarks/complexity.py             # full: ~4 minutes on 2 cores (budget: 10)
    python benchmarks/complexity.py --quick     # < 1 minute
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rtrl.dense import DenseRTRLLSTM, DenseRTRLRNN
from rtrl.nn import ELSTM
from rtrl.utils import tune_cpu_allocator

METHODS = {
    "dense_rnn": "dense RNN, full RTRL (online)",
    "dense_lstm": "dense LSTM, full RTRL (online)",
    "elstm_rtrl": "eLSTM, exact RTRL",
    "elstm_bptt": "eLSTM, BPTT (whole sequence)",
}
DENSE = ("dense_rnn", "dense_lstm")


# --- the workloads ----------------------------------------------------------------------------
def build(method: str, n: int, d: int, b: int, output_gate: bool):
    torch.manual_seed(0)
    if method == "dense_rnn":
        module = DenseRTRLRNN(d, n)
    elif method == "dense_lstm":
        module = DenseRTRLLSTM(d, n)
    else:
        learning = "rtrl" if method == "elstm_rtrl" else "bptt"
        module = ELSTM(d, n, learning=learning, output_gate=output_gate)
    return module, module.initial_state(b)


def sensitivity_bytes(method: str, n: int, d: int, b: int, itemsize: int = 4) -> int:
    """What the learner carries between steps besides its state, by formula."""
    if method == "dense_rnn":  # (B, N, N, D+N+1)
        return b * n * n * (d + n + 1) * itemsize
    if method == "dense_lstm":  # (B, 2N, 4N, D+N+1)
        return b * 2 * n * 4 * n * (d + n + 1) * itemsize
    if method == "elstm_rtrl":  # weight_ih (B, D, 2N), bias (B, 2N), weight_hh (B, 2, N)
        return b * (d * 2 * n + 2 * n + 2 * n) * itemsize
    return 0


def jacobian_product_flops(method: str, n: int, d: int, b: int) -> int:
    """Flops of the dense learners' O(N⁴) term per step: ``R_k (N×N) · J^h (N×P)`` for each gate."""
    gates = {"dense_rnn": 1, "dense_lstm": 4}[method]
    return 2 * b * gates * n * n * gates * n * (d + n + 1)


def run_sequence(module, state, x: torch.Tensor, chunk: int, count_saved: bool = False) -> int:
    """Process ``x (T, B, D)`` in segments of ``chunk`` steps, backward after each segment.

    ``state=None`` starts from ``module.initial_state``, made here so that no caller holds on to
    the initial sensitivities (each state is freed once the next replaces it).

    Returns the largest number of bytes autograd saved for one segment's backward (if counted),
    not counting ``x`` itself (the data, excluded from every memory figure here)."""
    most, data = 0, x.untyped_storage().data_ptr()
    if state is None:
        state = module.initial_state(x.shape[1])
    for a in range(0, x.shape[0], chunk):
        if count_saved:
            storages: dict[int, int] = {}

            def pack(t: torch.Tensor) -> torch.Tensor:
                s = t.untyped_storage()
                if s.data_ptr() != data:
                    storages[s.data_ptr()] = s.nbytes()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                y, state = module(x[a : a + chunk], state)
            most = max(most, sum(storages.values()))
        else:
            y, state = module(x[a : a + chunk], state)
        (y * y).sum().backward()
        state = state.detach()  # a no-op for RTRL; BPTT (one segment here) must not reach back
    return most


def chunk_of(method: str, t: int, chunk: int) -> int:
    return t if method == "elstm_bptt" else chunk


def measure_time(cfg: dict, reps: int, min_seconds: float) -> tuple[float, int]:
    """Median seconds per step over at least ``reps`` runs (after a warm-up), and the saved bytes.

    Cheap runs are repeated until they fill ``min_seconds`` (25 runs at most): on a shared machine
    a median of many short runs is what keeps other processes' bursts out of the numbers."""
    module, state = build(cfg["method"], cfg["n"], cfg["d"], cfg["b"], cfg["output_gate"])
    torch.manual_seed(1)
    x = torch.randn(cfg["t"], cfg["b"], cfg["d"])
    chunk = chunk_of(cfg["method"], cfg["t"], cfg["chunk"])
    saved = run_sequence(module, state, x[: max(chunk, min(cfg["t"], 2 * chunk))], chunk, count_saved=True)
    if cfg["method"] == "elstm_bptt":
        saved = run_sequence(module, state, x, chunk, count_saved=True)
    times: list[float] = []
    while len(times) < reps or (sum(times) * cfg["t"] < min_seconds and len(times) < 25):
        module.zero_grad()
        t0 = time.perf_counter()
        run_sequence(module, state, x, chunk)
        times.append((time.perf_counter() - t0) / cfg["t"])
    return statistics.median(times), saved


# --- peak memory, in a separate process ---------------------------------------------------------
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _probe(configs: list[dict]) -> list[float]:
    """Peak RSS rise (MB) of each configuration, one after another in this process."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    for method in {cfg["method"] for cfg in configs}:  # first calls allocate one-off buffers: not ours
        cfg = configs[0]
        module, state = build(method, 4, cfg["d"], cfg["b"], cfg["output_gate"])
        run_sequence(module, state, torch.randn(2, cfg["b"], cfg["d"]), 1)
    out = []
    for cfg in configs:
        torch.manual_seed(1)
        x = torch.randn(cfg["t"], cfg["b"], cfg["d"])
        gc.collect()
        libc.malloc_trim(0)  # hand freed heap pages back, so the previous configuration's don't count
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        base = _status_kb("VmRSS")
        module = build(cfg["method"], cfg["n"], cfg["d"], cfg["b"], cfg["output_gate"])[0]
        run_sequence(module, None, x, chunk_of(cfg["method"], cfg["t"], cfg["chunk"]))
        out.append((_status_kb("VmHWM") - base) / 1024)
        del module, x
    return out


def peak_memory(configs: list[dict], threads: int) -> list[float]:
    cmd = [sys.executable, __file__, "--threads", str(threads), "--probe", json.dumps(configs)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"memory probe failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# --- analysis -------------------------------------------------------------------------------------
def fit_exponent(xs: list[float], ys: list[float]) -> float:
    """Slope of log y against log x, least squares."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def check_exactness() -> None:
    """Refuse to time anything unless dense RTRL over segments equals one-segment BPTT (float64)."""
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    for cls in (DenseRTRLRNN, DenseRTRLLSTM):
        module = cls(3, 4).double()
        grads = []
        for segments in ([(0, 6)], [(0, 2), (2, 3), (3, 6)]):
            module.zero_grad()
            state = module.initial_state(2)
            for a, b in segments:
                y, state = module(x[a:b], state)
                (y * y).sum().backward()
            grads.append(torch.cat([q.grad.flatten() for q in module.parameters()]))
        if not torch.allclose(grads[0], grads[1], rtol=1e-10, atol=1e-12):
            raise SystemExit(f"{cls.__name__}: segmented RTRL != BPTT; the study would time wrong maths")


def plan(quick: bool) -> dict:
    if quick:
        return dict(
            n_dense={"dense_rnn": [8, 16, 32, 64], "dense_lstm": [8, 16, 32]},
            n_elstm=[64, 256, 1024, 4096],
            steps_dense=3,
            steps_elstm=40,
            t_bptt=40,
            reps=2,
            budget_s=0.5,
            t_n=256,
            t_dense_n=16,
            t_list=[64, 256, 1024],
            t_dense_list=[64, 256],
            chunk=32,
            fit_last=3,
            min_seconds=0.1,
        )
    return dict(
        n_dense={
            "dense_rnn": [8, 16, 32, 64, 96, 128, 192, 256, 384],
            "dense_lstm": [8, 16, 32, 48, 64, 96, 128, 192],
        },
        n_elstm=[16, 64, 256, 1024, 4096, 16384, 32768, 65536],
        steps_dense=3,
        steps_elstm=50,
        t_bptt=50,
        reps=3,
        budget_s=8.0,
        t_n=256,
        t_dense_n=32,
        t_list=[64, 256, 1024, 4096],
        t_dense_list=[64, 256, 1024],
        chunk=32,
        fit_last=3,
        min_seconds=1.0,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, finishes in under a minute")
    ap.add_argument("--out", default="docs/complexity.png", help="where to save the plot")
    ap.add_argument("--batch", type=int, default=4, help="streams B")
    ap.add_argument("--input-size", type=int, default=16, help="D, fixed for every N")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared 2-core machine more threads only add contention; "
        "the exponents do not depend on it)",
    )
    ap.add_argument("--output-gate", action="store_true", help="give the eLSTM its O(N²) output gate")
    ap.add_argument("--probe", help=argparse.SUPPRESS)  # internal: peak memory of a list of configs
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(_probe(json.loads(args.probe))))
        return

    started = time.perf_counter()
    check_exactness()
    tuned = tune_cpu_allocator()  # timing only: reuse heap memory instead of faulting fresh pages
    p = plan(args.quick)
    b, d = args.batch, args.input_size
    base = dict(b=b, d=d, output_gate=args.output_gate)
    print(
        f"complexity study: B={b} D={d} (fixed) float32, torch {torch.__version__}, "
        f"{args.threads} thread(s), "
        f"{'quick' if args.quick else 'full'} mode, allocator {'tuned' if tuned else 'default'}, "
        f"eLSTM output gate {'on' if args.output_gate else 'off'}"
    )
    print(
        "time = median over runs of (forward + backward of every segment) / steps; "
        "RTRL runs one step per segment\n"
    )

    # 1. N sweep -----------------------------------------------------------------------------
    rows = []
    for method in METHODS:
        sizes = p["n_dense"][method] if method in DENSE else p["n_elstm"]
        last = None
        for n in sizes:
            if method in DENSE and last is not None and last[1] * (n / last[0]) ** 4 > p["budget_s"]:
                print(
                    f"  {method}: N={n} skipped, predicted {last[1] * (n / last[0]) ** 4:.1f} s/step "
                    f"> budget {p['budget_s']} s/step"
                )
                break
            t = (
                p["steps_dense"]
                if method in DENSE
                else (p["t_bptt"] if method == "elstm_bptt" else p["steps_elstm"])
            )
            cfg = dict(base, method=method, n=n, t=t, chunk=1)
            sec, saved = measure_time(cfg, p["reps"], p["min_seconds"])
            module, state = build(method, n, d, b, args.output_gate)
            real = (
                sum(s.numel() * s.element_size() for s in state.sensitivities) if state.sensitivities else 0
            )
            assert real == sensitivity_bytes(method, n, d, b), (method, n, real)
            rows.append(dict(cfg, sec=sec, saved=saved, sens=real))
            last = (n, sec)
    peaks = peak_memory(
        [{k: r[k] for k in ("method", "n", "t", "chunk", "b", "d", "output_gate")} for r in rows],
        args.threads,
    )
    for r, pk in zip(rows, peaks):
        r["peak"] = pk

    print("1. Per-step cost as N grows")
    hdr = (
        f"{'method':<32} {'N':>6} {'T':>4} | {'ms/step':>10} {'GFLOP/s':>8} | "
        f"{'sens MB':>10} {'saved MB':>9} {'peak MB':>9}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        rate = (
            f"{jacobian_product_flops(r['method'], r['n'], d, b) / r['sec'] / 1e9:>8.1f}"
            if r["method"] in DENSE
            else f"{'':>8}"
        )
        print(
            f"{METHODS[r['method']]:<32} {r['n']:>6} {r['t']:>4} | {r['sec'] * 1e3:>10.3f} {rate} | "
            f"{r['sens'] / 2**20:>10.3f} {r['saved'] / 2**20:>9.3f} {r['peak']:>9.1f}"
        )

    print(
        "GFLOP/s: the dense learners' R·J products (2·B·G²·N³·(D+N+1) flops per step) per second of the "
        "whole step; flat at large N means that product dominates"
    )
    print(
        f"\nGrowth exponents (least squares on log-log over the {p['fit_last']} largest N of each method; "
        "smaller N are overhead-bound):"
    )
    fits = {}
    for method in METHODS:
        rs = [r for r in rows if r["method"] == method][-p["fit_last"] :]
        if len(rs) < 2:
            continue
        ns = [r["n"] for r in rs]
        f = dict(
            ns=ns,
            time=fit_exponent(ns, [r["sec"] for r in rs]),
            peak=fit_exponent(ns, [max(r["peak"], 1e-3) for r in rs]),
        )
        if method != "elstm_bptt":
            f["sens"] = fit_exponent(ns, [r["sens"] for r in rs])
        fits[method] = f
        mid = math.sqrt(ns[0] * ns[-1])
        theory = {
            "dense_rnn": f"theory (local slope at N≈{mid:.0f}, D={d}): time {3 + mid / (mid + d + 1):.2f}, "
            f"memory {2 + mid / (mid + d + 1):.2f}; →4 and 3 as N→∞",
            "dense_lstm": f"theory as the RNN: time {3 + mid / (mid + d + 1):.2f}, "
            f"memory {2 + mid / (mid + d + 1):.2f}",
            "elstm_rtrl": "theory: 1 and 1 (O(N·D) at fixed D)",
            "elstm_bptt": f"theory: time 1, memory 1 (O(T·N) at fixed T={p['t_bptt']})",
        }[method]
        sens = f"  sens memory {f['sens']:.2f}" if "sens" in f else ""
        print(
            f"  {METHODS[method]:<32} N={ns}: time {f['time']:.2f}{sens}  "
            f"peak memory {f['peak']:.2f}   [{theory}]"
        )

    # 2. T sweep -------------------------------------------------------------------------------
    trows = []
    runs = [
        ("elstm_bptt", p["t_n"], None, p["t_list"]),
        ("elstm_rtrl", p["t_n"], 1, p["t_list"]),
        ("elstm_rtrl", p["t_n"], p["chunk"], p["t_list"]),
        ("dense_rnn", p["t_dense_n"], 1, p["t_dense_list"]),
    ]
    for method, n, chunk, ts in runs:
        for t in ts:
            cfg = dict(base, method=method, n=n, t=t, chunk=chunk or t)
            sec, saved = measure_time(cfg, 1, p["min_seconds"])
            trows.append(dict(cfg, sec=sec, saved=saved, sens=sensitivity_bytes(method, n, d, b)))
    peaks = peak_memory(
        [{k: r[k] for k in ("method", "n", "t", "chunk", "b", "d", "output_gate")} for r in trows],
        args.threads,
    )
    for r, pk in zip(trows, peaks):
        r["peak"] = pk
    print("\n2. Memory as the sequence length T grows (one whole sequence, backward after each segment)")
    hdr = (
        f"{'method':<32} {'N':>5} {'T':>6} {'segment':>7} | {'ms/step':>8} | "
        f"{'sens MB':>8} {'saved MB':>9} {'peak MB':>9}"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in trows:
        print(
            f"{METHODS[r['method']]:<32} {r['n']:>5} {r['t']:>6} {r['chunk']:>7} | {r['sec'] * 1e3:>8.3f} | "
            f"{r['sens'] / 2**20:>8.3f} {r['saved'] / 2**20:>9.3f} {r['peak']:>9.1f}"
        )
    for method, n, chunk, ts in runs:
        rs = [r for r in trows if r["method"] == method and r["n"] == n and r["chunk"] == (chunk or r["t"])]
        tt = [r["t"] for r in rs]
        print(
            f"  {METHODS[method]:<32} N={n} segment={'T' if chunk is None else chunk}: "
            f"peak memory ∝ T^{fit_exponent(tt, [max(r['peak'], 1e-3) for r in rs]):.2f}, "
            f"saved ∝ T^{fit_exponent(tt, [max(r['saved'], 1) for r in rs]):.2f}, "
            f"time/step ∝ T^{fit_exponent(tt, [r['sec'] for r in rs]):.2f}"
        )

    plot(rows, trows, fits, args.out, p, b, d)
    print(f"\nplot: {args.out}   total {time.perf_counter() - started:.0f} s")


def plot(rows, trows, fits, out: str, p: dict, b: int, d: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    colors = {"dense_rnn": "C3", "dense_lstm": "C1", "elstm_rtrl": "C0", "elstm_bptt": "C2"}
    ax_t, ax_m, ax_tm, ax_tt = axes.flat
    for method, label in METHODS.items():
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        ns = [r["n"] for r in rs]
        f = fits.get(method, {})
        ax_t.loglog(
            ns,
            [r["sec"] * 1e3 for r in rs],
            "o-",
            color=colors[method],
            label=f"{label}" + (f" (slope {f['time']:.2f})" if f else ""),
        )
        if method != "elstm_bptt":
            ax_m.loglog(
                ns,
                [r["sens"] / 2**20 for r in rs],
                "o-",
                color=colors[method],
                label=f"{label}: sensitivities" + (f" (slope {f['sens']:.2f})" if f else ""),
            )
        ax_m.loglog(
            ns,
            [max(r["peak"], 1e-2) for r in rs],
            "x--",
            color=colors[method],
            label=f"{label}: measured peak",
        )
    ax_t.set(xlabel="hidden size N", ylabel="ms per step", title=f"Time per step vs N (B={b}, D={d})")
    ax_m.set(xlabel="hidden size N", ylabel="MB", title="Memory vs N")
    groups = {}
    for r in trows:
        groups.setdefault(
            (r["method"], r["n"], r["chunk"] if r["method"] != "elstm_bptt" else "T"), []
        ).append(r)
    for (method, n, chunk), rs in groups.items():
        label = f"{METHODS[method]}, N={n}, segment={chunk}"
        ts = [r["t"] for r in rs]
        style = dict(
            marker="o", color=colors[method], label=label, linestyle="-" if chunk in (1, "T") else ":"
        )
        ax_tm.loglog(ts, [max(r["peak"], 1e-2) for r in rs], **style)
        ax_tt.loglog(ts, [r["sec"] * 1e3 for r in rs], **style)
    ax_tm.set(xlabel="sequence length T", ylabel="measured peak MB", title="Peak memory vs T")
    ax_tt.set(xlabel="sequence length T", ylabel="ms per step", title="Time per step vs T")
    for ax in axes.flat:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Exact RTRL: dense O(N⁴) vs element-wise O(N·D), and BPTT (CPU, float32)")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
