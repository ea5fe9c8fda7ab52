"""Two stacked eLSTM layers on the copy task: the hybrid (top exact RTRL, bottom BPTT within the
update span) against one exact layer, full BPTT of both and truncated BPTT of both (Sec 5 of the paper).

    python experiments/layers/run.py                 # 5 seeds, writes docs/layers_table.md and docs/layers.png
    python experiments/layers/run.py --seeds 0 --max-sequences 640   # a smoke run

The 2-layer models are sized to the 1-layer model's parameter count (``--params``). Each run is
its own ``rtrl copy`` process with its own run folder under --out; finished runs are reused, an
unfinished one is resumed, so re-running the script continues the sweep.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from rtrl.tasks.copy import count_parameters, hidden_size_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stats import copy_summary, curve, permutation_p, run_copy  # noqa: E402


def methods(k: int, narrow: int) -> list[tuple[str, str, int, str]]:
    """(label, method, update_every, run name) of the compared runs; ``k`` is the update interval /
    span; ``narrow`` the width of each layer of the 2-layer models (for the 1-layer control)."""
    return [
        (f"1 layer, exact RTRL (update every {k})", "rtrl", k, f"rtrl-k{k}"),
        (f"2 layers, hybrid: top exact, bottom BPTT within {k} steps", "rtrl2", k, f"rtrl2-k{k}"),
        (f"2 layers, truncated BPTT of both, span {k}", "tbptt2", k, f"tbptt2-k{k}"),
        ("2 layers, full BPTT of both (one update per sequence)", "bptt2", 0, "bptt2-k0"),
        (f"1 layer, truncated BPTT, span {k}", "tbptt", k, f"tbptt-k{k}"),
        (f"control: 1 layer, exact RTRL, N = {narrow} (the 2-layer width)", "rtrl", k, f"rtrl-k{k}-n{narrow}"),
    ]


def run_one(out: Path, method: str, k: int, name: str, seed: int, args) -> dict:
    hidden = int(name.split("-n")[1]) if "-n" in name else args.hidden_size
    size = ["--hidden-size", str(hidden)] if method in ("rtrl", "tbptt") else ["--params", str(args.params)]
    return run_copy(out / f"{name}-s{seed}", ["--method", method, "--update-every", str(k), *size, "--level",
                                              str(args.level), "--seed", str(seed), "--max-sequences",
                                              str(args.max_sequences)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--level", type=int, default=3, help="patterns of 1..level bits")
    ap.add_argument("--hidden-size", type=int, default=64, help="N of the 1-layer models")
    ap.add_argument("--update-every", type=int, default=1, help="update interval of RTRL, span of TBPTT")
    ap.add_argument("--max-sequences", type=int, default=16_000)
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/layers"))
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    args = ap.parse_args()
    args.params = count_parameters("rtrl", args.hidden_size)
    k = args.update_every

    rows, curves, accs = [], {}, {}
    narrow = hidden_size_for("rtrl2", args.params)
    for label, method, kk, name in methods(k, narrow):
        results = [run_one(args.out, method, kk, name, s, args) for s in args.seeds]
        curves[label] = [curve(args.out / f"{name}-s{s}", "valid_accuracy") for s in args.seeds]
        acc = [r["test_accuracy"] for r in results]
        accs[method if name == f"{method}-k{kk}" else name] = (label, acc)
        rows.append(dict(label=label, n=results[0]["hidden_size"], params=results[0]["parameters"],
                         **copy_summary(results), each=" ".join(f"{a * 100:.0f}" for a in acc),
                         updates=f"{statistics.mean(r['updates'] for r in results):,.0f}"))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (label, cs) in enumerate(curves.items()):
        for j, (x, y) in enumerate(cs):
            ax.plot(x, y, color=f"C{i}", alpha=0.7, lw=1.2, label=label if j == 0 else None)
    ax.set_xlabel("training sequences")
    ax.set_ylabel("validation sequence accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"copy task, level {args.level}, ~{args.params:,} parameters each, seeds {args.seeds}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    args.docs.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.docs / "layers.png", dpi=110)

    defaults = dict(seeds=[0, 1, 2, 3, 4], level=3, hidden_size=64, update_every=1, max_sequences=16_000)
    flags = "".join(f" --{name.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                    for name, v in ((n, getattr(args, n)) for n in defaults) if v != defaults[name])
    lines = ["| method | N | params | test sequence accuracy, % (mean ± std) | per seed | seeds that solved it | "
             "sequences to solve (mean over those) | updates | wall time, s |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['n']} | {r['params']:,} | {r['acc']} | {r['each']} | {r['solved']} | {r['steps']} | "
              f"{r['updates']} | {r['wall']} |" for r in rows]
    hybrid = accs["rtrl2"][1]
    lines += ["", "The hybrid against each other row: exact two-sided permutation test of the mean test accuracy "
              "over seeds.", "", "| hybrid vs | mean accuracy, % | permutation p |", "|---|---|---|"]
    lines += [f"| {label} | {statistics.mean(hybrid) * 100:.1f} vs {statistics.mean(acc) * 100:.1f} | "
              f"{permutation_p(hybrid, acc):.3f} |" for key, (label, acc) in accs.items() if key != "rtrl2"
              and min(len(acc), len(hybrid)) > 1]
    table = "\n".join(lines)
    (args.docs / "layers_table.md").write_text(f"Made by `python experiments/layers/run.py{flags}`:\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
