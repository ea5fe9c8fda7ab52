"""Copy task comparison at the CPU size: exact online RTRL vs TBPTT vs full BPTT vs LSTM.

    python experiments/copy/run.py                  # 3 seeds, writes docs/copy_task.md and docs/copy_task.png
    python experiments/copy/run.py --seeds 0 --max-sequences 5000   # a smoke run

Each run is its own `rtrl copy` process (so peak memory is per run) with its own run folder under
--out; finished runs are reused, so re-running the script resumes the sweep.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stats import copy_summary, curve, run_copy  # noqa: E402  (experiments/stats.py, shared by the studies)

# (label, method, update_every)
METHODS = [
    ("RTRL eLSTM, online (update every step)", "rtrl", 1),
    ("TBPTT eLSTM, span 1", "tbptt", 1),
    ("TBPTT eLSTM, span 2", "tbptt", 2),
    ("full BPTT eLSTM", "bptt", 0),
    ("full BPTT LSTM", "lstm", 0),
]


def run_one(out: Path, method: str, k: int, seed: int, max_sequences: int) -> dict:
    return run_copy(out / f"{method}-k{k}-s{seed}", ["--method", method, "--update-every", str(k), "--seed", str(seed),
                                                    "--max-sequences", str(max_sequences)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--max-sequences", type=int, default=40_000)
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/copy"))
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    args = ap.parse_args()

    rows, curves = [], {}
    for label, method, k in METHODS:
        results = [run_one(args.out, method, k, s, args.max_sequences) for s in args.seeds]
        curves[label] = [curve(args.out / f"{method}-k{k}-s{s}", "valid_accuracy") for s in args.seeds]
        rows.append(dict(label=label, **copy_summary(results),
                         mem=f"{statistics.mean(r['peak_rss_mb'] for r in results):.0f}"))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, cs in curves.items():
        for i, (x, y) in enumerate(cs):
            ax.plot(x, y, color=f"C{list(curves).index(label)}", alpha=0.8, label=label if i == 0 else None)
    ax.set_xlabel("training sequences")
    ax.set_ylabel("validation sequence accuracy")
    ax.set_title(f"copy task, level 5 (patterns of 1-5 bits), N = 128, seeds {args.seeds}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.docs.mkdir(exist_ok=True)
    fig.savefig(args.docs / "copy_task.png", dpi=110)

    cmd = "python experiments/copy/run.py" + ("" if args.seeds == [0, 1, 2] else f" --seeds {' '.join(map(str, args.seeds))}") \
        + ("" if args.max_sequences == 40_000 else f" --max-sequences {args.max_sequences}")
    lines = ["| method | test sequence accuracy, % (mean ± std) | seeds that solved it | sequences to solve (mean over those) | wall time, s | peak RSS, MB |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['acc']} | {r['solved']} | {r['steps']} | {r['wall']} | {r['mem']} |" for r in rows]
    table = "\n".join(lines)
    (args.docs / "copy_task_table.md").write_text(f"Made by `{cmd}`:\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
