"""Small statistics and sweep helpers the experiment scripts share (no dependency beyond the stdlib).

* ``ci95(xs)``: mean and half-width of the 95 % confidence interval (Student t, n − 1 degrees).
* ``permutation_p(a, b)``: exact two-sided permutation test of a difference of means (all splits).
* ``fisher_p(k1, n1, k2, n2)``: one-sided Fisher exact test that group 1 solves more often.
* ``compare(a, b, ka, kb)``: the table cells of one claimed difference (both tests).
* ``copy_summary(results)``: the table cells of one copy-task method over its seeds.
* ``run_train(...)``, ``run_copy(...)``: run or resume one ``rtrl train`` / ``rtrl copy`` job in its own
  folder, reuse it when finished.
* ``budgets(run_dir)``: the budgets a run was started with (more than one: extended by a resume).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Optional

# t_{0.975, df} for df = 1..30 (beyond: 1.96 is within 2 % for df > 30)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def ci95(xs: list[float]) -> tuple[float, float]:
    """``(mean, half-width)`` of the 95 % t-interval; half-width nan for fewer than 2 values."""
    if not xs:
        return float("nan"), float("nan")
    if len(xs) < 2:
        return xs[0], float("nan")
    t = _T975[len(xs) - 2] if len(xs) - 1 <= len(_T975) else 1.96
    return statistics.mean(xs), t * statistics.stdev(xs) / math.sqrt(len(xs))


def fmt_ci(xs: list[float], digits: int = 2) -> str:
    m, h = ci95(xs)
    if math.isnan(m):
        return "—"
    return f"{m:.{digits}f}" if math.isnan(h) else f"{m:.{digits}f} ± {h:.{digits}f}"


def permutation_p(a: list[float], b: list[float]) -> float:
    """Two-sided exact permutation test of ``mean(a) − mean(b)``: the share of all ways to split the
    pooled values into groups of these sizes whose difference is at least as large in magnitude."""
    pooled, n = a + b, len(a)
    observed = abs(statistics.mean(a) - statistics.mean(b))
    total = sum(pooled)
    count = hits = 0
    for idx in itertools.combinations(range(len(pooled)), n):
        s = sum(pooled[i] for i in idx)
        diff = abs(s / n - (total - s) / len(b))
        hits += diff >= observed - 1e-12
        count += 1
    return hits / count


def fisher_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided Fisher exact test: probability of group 1 solving ``>= k1`` of ``n1`` given the totals."""
    k, n = k1 + k2, n1 + n2
    denom = math.comb(n, k)
    return sum(math.comb(n1, i) * math.comb(n2, k - i) for i in range(k1, min(n1, k) + 1)) / denom


def compare(a: list[float], b: list[float], ka: int, kb: int, na: int | None = None, nb: int | None = None) -> str:
    """The table cells of one claimed difference: ``mean A vs B | permutation p | ka/na vs kb/nb |
    Fisher p (A > B)``. ``na``, ``nb``: the seeds run, when some are missing from ``a``, ``b``
    (diverged runs count as not solved); by default ``len(a)``, ``len(b)``."""
    na, nb = len(a) if na is None else na, len(b) if nb is None else nb
    return (f"{statistics.mean(a):.2f} vs {statistics.mean(b):.2f} | {permutation_p(a, b):.3f} | "
            f"{ka}/{na} vs {kb}/{nb} | {fisher_p(ka, na, kb, nb):.3f}")


def curve(run_dir: Path, key: str = "mean_return") -> tuple[list[float], list[float]]:
    """``(frames, values)`` of a run's metrics.csv column (rows where it is logged)."""
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get(key) not in (None, "", "nan")]
    return [float(r["step"]) for r in rows], [float(r[key]) for r in rows]


def frames_to(run_dir: Path, threshold: float, window: int = 100) -> Optional[float]:
    """The first logged frame count at which the training return (the mean over the last ``window``
    episodes) reached ``threshold``, counting only rows where ``window`` episodes had finished (a
    mean over the first handful of episodes is luck), or None."""
    steps, values = curve(run_dir)
    finished = dict(zip(*curve(run_dir, "episodes")))
    for step, value in zip(steps, values):
        if finished.get(step, 0) >= window and value >= threshold:
            return step
    return None


LAUNCHER: list[str] = []  # a prefix for every job's command (e.g. ``nice``, ``srun``, a lock), set by --launcher


def old_preset(args: list[str]) -> list[str]:
    """``--preset small`` (R2AC) or ``--preset ppo`` for a job whose args name none: the presets the
    studies were run with, before `rtrl train` chose one from the env (so that their runs resume)."""
    if "--preset" in args:
        return []
    return ["--preset", "ppo" if "ppo" in args[args.index("--algo") + 1:][:1] else "small"] if "--algo" in args \
        else ["--preset", "small"]


def run_train(run_dir: Path, args: list[str], frames: int) -> Optional[dict]:
    """Run (or resume, or extend to ``frames``) one ``rtrl train`` job; None if it failed (printed)."""
    done = run_dir / "result.json"
    if done.exists() and json.loads(done.read_text())["frames"] >= frames:
        return json.loads(done.read_text())
    cmd = [sys.executable, "-m", "rtrl.cli", "train", *args, "--total-frames", str(frames), "--run-dir", str(run_dir),
           "--no-progress"]
    if (run_dir / "config.json").exists():
        cmd.append("--resume")
    print(" ".join(cmd[3:]), flush=True)
    out = subprocess.run([*LAUNCHER, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        print(f"FAILED ({out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}): "
              f"{' '.join(cmd[3:])}", flush=True)
        return None
    return json.loads(done.read_text())


def budgets(run_dir: Path) -> list[int]:
    """The distinct ``--total-frames`` a run was started with, in order (meta.json's starts): more
    than one where :func:`run_train` extended a finished run to a larger budget."""
    out: list[int] = []
    for start in json.loads((run_dir / "meta.json").read_text())["starts"]:
        argv = start["argv"]
        if "--total-frames" in argv:
            frames = int(argv[argv.index("--total-frames") + 1])
            if frames not in out:
                out.append(frames)
    return out


def run_copy(run_dir: Path, args: list[str]) -> dict:
    """Run (or resume) one ``rtrl copy`` job in ``run_dir``; reuse it when finished."""
    result = run_dir / "result.json"
    if not result.exists():
        cmd = [sys.executable, "-m", "rtrl.cli", "copy", *args, "--run-dir", str(run_dir), "--no-progress"]
        if run_dir.exists():
            cmd.append("--resume")
        print(" ".join(cmd[1:]), flush=True)
        subprocess.run([*LAUNCHER, *cmd], check=True, stdout=subprocess.DEVNULL)
    return json.loads(result.read_text())


def copy_summary(results: list[dict]) -> dict[str, str]:
    """Table cells of one copy-task method over its seeds' result.json: test accuracy (% mean ±
    population std), seeds solved, mean sequences to solve (over the seeds that did), mean wall time."""
    acc = [r["test_accuracy"] for r in results]
    solved = [r["sequences_to_solve"] for r in results]
    return dict(acc=f"{statistics.mean(acc) * 100:.1f} ± {statistics.pstdev(acc) * 100:.1f}",
                solved=f"{sum(s is not None for s in solved)}/{len(solved)}",
                steps=f"{statistics.mean([s for s in solved if s]):,.0f}" if any(solved) else "—",
                wall=f"{statistics.mean(r['wall_s'] for r in results):.0f}")


def agent_parameters(env: str, core: str, hidden: int) -> int:
    from rtrl.rl.agent import Agent
    from rtrl.rl.envs import make_env

    e = make_env(env, 1)
    n = sum(p.numel() for p in Agent(e.obs_shape, e.num_actions, core, hidden).parameters())
    e.close()
    return n


def hidden_for(env: str, core: str, target: int) -> int:
    """The (even) hidden size whose agent has the parameter count closest to ``target``."""
    if core == "none":
        return 2
    sizes = range(2, 2048, 2)
    lo, hi = 0, len(sizes) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if agent_parameters(env, core, sizes[mid]) < target else (lo, mid)
    return min((sizes[lo], sizes[hi]), key=lambda h: abs(agent_parameters(env, core, h) - target))
