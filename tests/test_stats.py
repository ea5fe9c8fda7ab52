"""The statistics the evidence pages rest on (experiments/stats.py), against values worked by hand."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
from stats import budgets, ci95, compare, copy_summary, fisher_p, fmt_ci, frames_to, permutation_p  # noqa: E402


def test_ci95_is_the_student_t_interval():
    mean, half = ci95([1.0, 2.0, 3.0, 4.0, 5.0])  # sd = sqrt(2.5), t(0.975, 4) = 2.776
    assert mean == 3.0 and half == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5), rel=1e-12)
    assert math.isnan(ci95([2.0])[1]) and fmt_ci([2.0]) == "2.00" and fmt_ci([]) == "—"


def test_permutation_p_counts_every_split():
    # 20 ways to split six values into two threes; only the observed split and its mirror differ by 3
    assert permutation_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(2 / 20)
    assert permutation_p([1.0, 1.0], [1.0, 1.0]) == 1.0


def test_fisher_p_is_the_hypergeometric_tail():
    assert fisher_p(5, 5, 0, 5) == pytest.approx(1 / math.comb(10, 5))  # all 5 successes in group 1
    # 11 of 16 against 0 of 9: P(group 1 holds >= 11 of the 11 successes) = C(16,11) / C(25,11)
    assert fisher_p(11, 16, 0, 9) == pytest.approx(math.comb(16, 11) / math.comb(25, 11))
    assert fisher_p(0, 5, 0, 5) == 1.0 and fisher_p(1, 5, 4, 5) > 0.9


def test_compare_counts_diverged_seeds_as_unsolved():
    # 4 finished seeds of 5 (one diverged): the Fisher test is on 4/5 solved, not 4/4
    cells = compare([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0], 4, 0, na=5)
    assert cells == f"1.00 vs 0.00 | {permutation_p([1.0] * 4, [0.0] * 5):.3f} | 4/5 vs 0/5 | {fisher_p(4, 5, 0, 5):.3f}"
    assert compare([1.0, 0.0], [0.0, 0.0], 1, 0).endswith(f"1/2 vs 0/2 | {fisher_p(1, 2, 0, 2):.3f}")


def test_copy_summary_averages_solving_steps_over_the_seeds_that_solved():
    runs = [dict(test_accuracy=1.0, sequences_to_solve=1000, wall_s=10.0),
            dict(test_accuracy=0.5, sequences_to_solve=None, wall_s=20.0)]
    assert copy_summary(runs) == dict(acc="75.0 ± 25.0", solved="1/2", steps="1,000", wall="15")
    assert copy_summary(runs[1:])["steps"] == "—"


def test_frames_to_ignores_a_mean_of_the_first_few_episodes(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,mean_return,episodes\n"
                                          "100,1.0,3\n"      # lucky first episodes: not counted
                                          "200,0.2,150\n"
                                          "300,0.95,400\n")
    assert frames_to(tmp_path, 0.9) == 300
    assert frames_to(tmp_path, 0.99) is None


def test_budgets_lists_each_extension_once(tmp_path):
    def start(frames: int) -> dict:
        return {"time": "t", "argv": ["cli.py", "train", "--total-frames", str(frames), "--resume"]}

    # a first run, a resume after a crash at the same budget, then an extension
    starts = [start(2_000_000), start(2_000_000), start(5_000_000)]
    (tmp_path / "meta.json").write_text(json.dumps({"starts": starts}))
    assert budgets(tmp_path) == [2_000_000, 5_000_000]
    (tmp_path / "meta.json").write_text(json.dumps({"starts": starts[:2]}))
    assert budgets(tmp_path) == [2_000_000]
