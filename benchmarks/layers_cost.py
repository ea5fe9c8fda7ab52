"""What exact RTRL costs for two stacked eLSTM layers, against one layer and the hybrid (Sec 5 of the paper).

eLSTM layers with output gates, ``D = N`` (or ``--input-size``), float32 on the CPU, ``B`` streams,
``T`` steps and a loss on every step (``Σ_t ‖y_t‖²``):

  1-layer   rtrl.nn.ELSTM(learning="rtrl"): the chunked exact engine, segments of ``--segment``
  hybrid    rtrl.nn.TwoLayer(learning="rtrl"): top layer exact (the same engine, input width N),
            bottom layer BPTT within the segment; the same segments
  tbptt2    rtrl.nn.TwoLayer(learning="bptt"), state detached between segments (no sensitivities)
  exact2    rtrl.multilayer.two_layer_rtrl: both layers exact, a per-step loop over the three
            sensitivity blocks dc¹/dθ¹, dc²/dθ² (element-wise) and the dense dc²/dθ¹

``bytes/stream``: the sensitivities carried between steps, from the tensors themselves (for
exact2 also the dense block alone). ``ms/step``: median over ``--reps`` runs of the sequence,
the methods interleaved so that a burst of load on a shared machine hits all alike. ``× 1-layer``:
ratios to the one-layer engine measured in the same run. The exponents are least-squares slopes
of ``log(cost)`` on ``log(N)`` over the sizes given (and over the upper half of them, where fixed
per-step overheads weigh less). The paper's claim: ``L(L+1)/2`` sensitivity blocks, the dense one
``O(N²·D)`` memory per stream (``≈ N³``) and full-RTRL (quartic) time.

    python benchmarks/layers_cost.py                          # N = 8 .. 128, D = N
    python benchmarks/layers_cost.py --sizes 16 32 64 128 256 --batch 2
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from rtrl.multilayer import two_layer_rtrl
from rtrl.nn import ELSTM, TwoLayer
from rtrl.utils import tune_cpu_allocator

METHODS = ("1-layer", "hybrid", "tbptt2", "exact2")


def build(method: str, n: int, d: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if method == "1-layer":
        return ELSTM(d, n, learning="rtrl")
    return TwoLayer("elstm", d, n, learning="bptt" if method in ("tbptt2", "exact2") else "rtrl")


def run_sequence(method: str, m: torch.nn.Module, x: torch.Tensor, segment: int) -> dict[str, int]:
    """Learn from ``x (T, B, D)`` once; returns the bytes per stream of the carried sensitivities."""
    B = x.shape[1]
    if method == "exact2":
        _, _, sens = two_layer_rtrl(m, x, lambda t, y: (y * y).sum())
        blocks = sens.bytes_per_stream()
        return {"total": sum(blocks.values()), "dense": blocks["dense"]}
    state = m.initial_state(B)
    for t in range(0, x.shape[0], segment):
        y, state = m(x[t:t + segment], state.detach())
        (y * y).sum().backward()
    sens = state.sensitivities
    total = 0 if sens is None else sum(s[0].numel() * s.element_size() for s in sens)
    return {"total": total, "dense": 0}


def slope(ns: list[int], values: list[float]) -> float:
    """Least-squares slope of ``log(value)`` on ``log(n)``."""
    lx, ly = [math.log(n) for n in ns], [math.log(v) for v in values]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def measure(sizes: list[int], d_fixed: int, b: int, t: int, segment: int, reps: int, exact_max: int) -> list[dict]:
    rows = []
    for n in sizes:
        d = d_fixed or n
        methods = [m for m in METHODS if m != "exact2" or n <= exact_max]
        modules = {m: build(m, n, d) for m in methods}
        x = torch.randn(t, b, d)
        mem = {m: run_sequence(m, modules[m], x, segment) for m in methods}  # also the warm-up
        times: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(reps):
            for m in methods:
                modules[m].zero_grad()
                t0 = time.perf_counter()
                run_sequence(m, modules[m], x, segment)
                times[m].append((time.perf_counter() - t0) / t)
        base_t, base_b = statistics.median(times["1-layer"]), mem["1-layer"]["total"]
        for m in methods:
            sec = statistics.median(times[m])
            rows.append(dict(n=n, d=d, method=m, ms=1e3 * sec, t_ratio=sec / base_t, bytes=mem[m]["total"],
                             dense=mem[m]["dense"], b_ratio=mem[m]["total"] / base_b,
                             params=sum(p.numel() for p in modules[m].parameters())))
            print(_fmt(rows[-1]), flush=True)
    return rows


HEADER = ("| N | D | method | params | bytes/stream | of which dense | × 1-layer bytes | ms/step | × 1-layer time |\n"
          "|---|---|---|---|---|---|---|---|---|")


def _fmt(r: dict) -> str:
    return (f"| {r['n']} | {r['d']} | {r['method']} | {r['params']} | {r['bytes']:,} | {r['dense']:,} | "
            f"{r['b_ratio']:.2f} | {r['ms']:.3f} | {r['t_ratio']:.2f} |")


def exponents(rows: list[dict]) -> None:
    print("\n| method | bytes exponent (all N) | (upper half) | time exponent (all N) | (upper half) |\n|---|---|---|---|---|")
    for m in METHODS:
        mine = [r for r in rows if r["method"] == m]
        if len(mine) < 2:
            continue
        ns = [r["n"] for r in mine]
        upper = mine[len(mine) // 2 - (len(mine) % 2 == 0):] if len(mine) > 2 else mine
        cells = []
        for key in ("bytes", "ms"):
            if min(r[key] for r in mine) <= 0:
                cells += ["-", "-"]
                continue
            cells += [f"{slope(ns, [r[key] for r in mine]):.2f}",
                      f"{slope([r['n'] for r in upper], [r[key] for r in upper]):.2f}"]
        print(f"| {m} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128], help="hidden sizes N")
    ap.add_argument("--input-size", type=int, default=0, help="D (0: D = N)")
    ap.add_argument("--exact-max", type=int, default=1024, help="largest N for exact2")
    ap.add_argument("--batch", type=int, default=4, help="B, streams")
    ap.add_argument("--steps", type=int, default=16, help="T, steps per sequence")
    ap.add_argument("--segment", type=int, default=16, help="steps per segment of 1-layer, hybrid, tbptt2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    print(f"eLSTM layers, D = {args.input_size or 'N'}, B={args.batch}, T={args.steps}, segments of {args.segment}, "
          f"float32, {torch.get_num_threads()} threads, median of {args.reps}")
    print(HEADER)
    rows = measure(args.sizes, args.input_size, args.batch, args.steps, args.segment, args.reps, args.exact_max)
    exponents(rows)


if __name__ == "__main__":
    main()
