"""What a learning rule costs per step for a dense LSTM: exact RTRL vs SnAp-1 vs UORO vs BPTT.

One dense LSTM layer (gates i, f, g, o), float32 on the CPU, a sequence of ``T`` steps of
``B`` streams and a loss on every step (``Σ_t ‖h_t‖²``):

  bptt    torch.nn.LSTM over the whole sequence, one backward at the end (the baseline: the
          fused C++ loop users compare against)
  loop    BPTT of the same cell stepped by a Python loop (``DenseRTRLLSTM._step`` under autograd):
          the per-step cost of Python and autograd dispatch that every rule below also pays
  exact   rtrl.dense.DenseRTRLLSTM: sensitivities (B, 2N, 4N, D+N+1), O(N⁴) work per step
  snap1   rtrl.approx.SnAp1LSTM: sensitivities (B, 2, 4N, D+N+1), O(N(D+N)) work per step
  uoro    rtrl.approx.UOROLSTM: u (B, 2N) and theta (B, 4N, D+N+1), O(N(D+N)) work per step

The three RTRL rules run in segments of ``--segment`` steps with a backward after each (1, the
default: fully online, one update per step; ``--segment T``: one backward per sequence, as BPTT).

Time: median seconds per step over repeated runs of the sequence (each method in turn, so that a
burst of another process on a shared machine hits all of them alike); ``×bptt`` is the ratio to
BPTT measured in the same run. Memory: ``carried MB``, the bytes of the sensitivities held
between steps (from the tensors themselves); ``graph MB``, the largest amount autograd saves for
one backward (counted with ``torch.autograd.graph.saved_tensors_hooks``): for BPTT the whole
sequence's activations, for the online rules one step's. Their sum is what the rule needs beyond
the weights and inputs.

    python benchmarks/rules_cost.py --threads 1               # fully online; N = 32, 64, 128 (no exact)
    python benchmarks/rules_cost.py --threads 1 --segment 32  # one backward per sequence
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from rtrl.approx import SnAp1LSTM, UOROLSTM
from rtrl.dense import DenseRTRLLSTM
from rtrl.utils import tune_cpu_allocator

RULES = {"bptt": nn.LSTM, "loop": DenseRTRLLSTM, "exact": DenseRTRLLSTM, "snap1": SnAp1LSTM, "uoro": UOROLSTM}


def python_loop(module: DenseRTRLLSTM, x: torch.Tensor) -> torch.Tensor:
    """``h (T, B, N)`` by the module's own step in a Python loop, plain autograd, no sensitivities."""
    s = x.new_zeros(x.shape[1], module.state_size)
    p = F.linear(x, module.weight_ih, module.bias)
    ys = []
    for t in range(x.shape[0]):
        s, _ = module._step(p[t], s)
        ys.append(s[:, : module.hidden_size])
    return torch.stack(ys)


def build(rule: str, n: int, d: int) -> nn.Module:
    torch.manual_seed(0)
    return RULES[rule](d, n)


def run_sequence(rule: str, module: nn.Module, x: torch.Tensor, segment_len: int = 1,
                 count: bool = False) -> tuple[int, int]:
    """Learn from ``x (T, B, D)`` once. Returns (carried bytes, largest saved-for-backward bytes)."""
    saved: list[int] = []

    def segment(fn, carried=()):
        if not count:
            return fn()
        storages: dict[int, int] = {}
        # neither the data nor the incoming sensitivities (counted as carried) are the graph's
        skip = {x.untyped_storage().data_ptr()} | {s.untyped_storage().data_ptr() for s in carried}

        def pack(t: torch.Tensor) -> torch.Tensor:
            s = t.untyped_storage()
            if s.data_ptr() not in skip:
                storages[s.data_ptr()] = s.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = fn()
        saved.append(sum(storages.values()))
        return out

    if rule in ("bptt", "loop"):
        y = segment(lambda: module(x)[0] if rule == "bptt" else python_loop(module, x))
        (y * y).sum().backward()
        return 0, max(saved, default=0)
    state = module.initial_state(x.shape[1])
    for t in range(0, x.shape[0], segment_len):
        y, state = segment(lambda: module(x[t : t + segment_len], state), state.sensitivities)
        (y * y).sum().backward()
    carried = sum(s.nbytes for s in state.sensitivities)
    return carried, max(saved, default=0)


def measure(sizes: list[int], exact_max: int, d: int, b: int, t: int, reps: int, seg: int) -> list[dict]:
    rows = []
    for n in sizes:
        rules = [r for r in RULES if r != "exact" or n <= exact_max]
        modules = {r: build(r, n, d) for r in rules}
        x = torch.randn(t, b, d)
        mem = {r: run_sequence(r, modules[r], x, seg, count=True) for r in rules}  # also the warm-up
        times: dict[str, list[float]] = {r: [] for r in rules}
        for _ in range(reps):
            for r in rules:  # interleaved: a burst of load hits every rule alike
                modules[r].zero_grad()
                t0 = time.perf_counter()
                run_sequence(r, modules[r], x, seg)
                times[r].append((time.perf_counter() - t0) / t)
        base = statistics.median(times["bptt"])
        for r in rules:
            sec = statistics.median(times[r])
            carried, graph = mem[r]
            rows.append(dict(n=n, rule=r, ms=1e3 * sec, ratio=sec / base, carried_mb=carried / 2**20,
                             graph_mb=graph / 2**20, params=sum(p.numel() for p in modules[r].parameters())))
            print(_fmt(rows[-1]), flush=True)
    return rows


HEADER = "| N | rule | params | ms / step | × bptt | carried MB | graph MB |\n|---|---|---|---|---|---|---|"


def _fmt(row: dict) -> str:
    return (f"| {row['n']} | {row['rule']} | {row['params']} | {row['ms']:.2f} | {row['ratio']:.2f} | "
            f"{row['carried_mb']:.2f} | {row['graph_mb']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128], help="hidden sizes N")
    ap.add_argument("--exact-max", type=int, default=64, help="largest N for exact RTRL (O(N⁴) per step)")
    ap.add_argument("--input-size", type=int, default=32, help="D")
    ap.add_argument("--batch", type=int, default=8, help="B, streams")
    ap.add_argument("--steps", type=int, default=32, help="T, steps per sequence")
    ap.add_argument("--segment", type=int, default=1, help="steps per segment of the RTRL rules (1: online)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    print(f"dense LSTM, D={args.input_size}, B={args.batch}, T={args.steps}, RTRL segments of {args.segment}, float32, "
          f"{torch.get_num_threads()} threads, median of {args.reps}")
    print(HEADER)
    measure(args.sizes, args.exact_max, args.input_size, args.batch, args.steps, args.reps, args.segment)


if __name__ == "__main__":
    main()
