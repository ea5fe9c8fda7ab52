"""Everything a person with one GPU should run once: the CUDA tests and every GPU ratio, < 8 minutes.

    python benchmarks/device_check.py                 # on a machine with a CUDA device
    python benchmarks/device_check.py --device cpu --quick   # the same steps on the CPU, tiny (a smoke run)

Steps, each printing its figures as it goes (and a summary at the end):
  1. tests      ``pytest tests/test_cuda.py``: float64 exactness of every module on the device,
                R2AC updates equal to the CPU's, a run resumed across devices
  2. modules    ``benchmarks/rtrl_speed.py --device D``: per-step RTRL (the paper's learner step)
                over chunked exact RTRL (a/b) at the paper's size, and exact RTRL over the same
                module's truncated BPTT for every module (the bar: <= 1.15 on a GPU)
  3. dense      full RTRL of a dense RNN against the eLSTM's exact RTRL, time per online step on
                the device as N grows (the complexity study's sizes that fit in seconds)
  4. r2ac       ``rtrl train --device D`` against ``--device cpu`` on popgym RepeatPreviousEasy
                (end-to-end frames/s, start-up included), and the greedy return
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], timeout: float) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
        code, text = out.returncode, out.stdout + out.stderr
    except subprocess.TimeoutExpired as e:
        code, text = 124, f"timed out after {timeout:.0f} s\n{e.stdout or ''}"
    return code, text, time.perf_counter() - t0


def step_tests(device: str, quick: bool) -> str:
    if device == "cpu":
        return "skipped (no CUDA device asked for)"
    code, text, wall = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                            "tests/test_cuda.py"], 300)
    print(text.strip().splitlines()[-1] if text.strip() else "(no output)")
    return f"rc {code} in {wall:.0f} s: {text.strip().splitlines()[-1] if text.strip() else ''}"


def step_modules(device: str, quick: bool) -> str:
    tiny = ["--no-elstm", "--cells", "lru", "--cell-size", "16", "--cell-steps", "5", "--reps", "1"]
    args = ["--device", device, "--no-memory"] + (tiny if quick else ["--reps", "5"])
    code, text, wall = run([sys.executable, "benchmarks/rtrl_speed.py", *args], 300)
    print(text.rstrip())
    return f"rc {code} in {wall:.0f} s (tables above)"


def _per_step(module, x: torch.Tensor, device: torch.device) -> float:
    """Seconds per online step (segments of one step, backward after each) on ``device``."""
    state = module.initial_state(x.shape[1])

    def once() -> None:
        nonlocal state
        for t in range(x.shape[0]):
            y, state = module(x[t:t + 1], state)
            (y * y).sum().backward()
            state = state.detach()

    once()  # warm-up (kernel selection, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    once()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / x.shape[0]


def step_dense(device: str, quick: bool) -> str:
    from rtrl.dense import DenseRTRLRNN
    from rtrl.nn import ELSTM

    dev = torch.device(device)
    d, b, steps = 16, 4, 5
    dense_sizes = [16, 32, 64] if quick else [32, 64, 128, 256]
    elstm_sizes = [64, 256] if quick else [256, 1024, 4096, 16384, 65536]
    rows = []
    print(f"{'layer':>12} | {'N':>6} | {'ms / step':>10}")
    for kind, sizes in (("dense RNN", dense_sizes), ("eLSTM", elstm_sizes)):
        for n in sizes:
            torch.manual_seed(0)
            module = (DenseRTRLRNN(d, n) if kind == "dense RNN" else ELSTM(d, n, output_gate=False)).to(dev)
            x = torch.randn(steps, b, d, device=dev)
            ms = 1e3 * _per_step(module, x, dev)
            rows.append((kind, n, ms))
            print(f"{kind:>12} | {n:>6} | {ms:10.3f}", flush=True)
    dense = [(n, ms) for k, n, ms in rows if k == "dense RNN"]
    grow = dense[-1][1] / dense[-2][1] if len(dense) > 1 else float("nan")
    return f"dense RNN x{grow:.1f} per doubling of N at N={dense[-1][0]} (theory up to 16); eLSTM rows above"


def step_r2ac(device: str, quick: bool) -> str:
    frames = "20000" if quick else "400000"
    results = {}
    for dev in dict.fromkeys([device, "cpu"]):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "rtrl.cli", "train", "--env", "popgym-RepeatPreviousEasy-v0", "--core",
                   "rtrl-lru", "--total-frames", frames, "--device", dev, "--run-dir", f"{tmp}/run", "--no-progress"]
            code, text, wall = run(cmd, 300)
        if code != 0:
            print(f"--device {dev}: failed: {text.strip().splitlines()[-1] if text.strip() else code}")
            continue
        out = json.loads(text[text.index("{"):text.rindex("}") + 1])
        results[dev] = (int(frames) / wall, out.get("eval", {}).get("greedy", {}).get("mean"))
        print(f"--device {dev}: {results[dev][0]:,.0f} frames/s end to end (wall {wall:.1f} s), "
              f"greedy return {results[dev][1]}", flush=True)
    if device in results and "cpu" in results and device != "cpu":
        return f"{device}/cpu end-to-end frames/s: {results[device][0] / results['cpu'][0]:.2f}"
    return "; ".join(f"{k}: {v[0]:,.0f} frames/s" for k, v in results.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every step")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"no CUDA device (torch {torch.__version__}): run on a GPU machine, "
                         "or with --device cpu for a smoke run")
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"device check on {args.device} ({name}), torch {torch.__version__}", flush=True)
    t0 = time.perf_counter()
    summary = {}
    for title, step in (("tests", step_tests), ("modules", step_modules), ("dense", step_dense),
                        ("r2ac", step_r2ac)):
        print(f"\n== {title} ==", flush=True)
        summary[title] = step(args.device, args.quick)
    print("\n== summary ==")
    for title, line in summary.items():
        print(f"{title:>8}: {line}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
