"""Mutation testing of the files whose bugs give wrong numbers silently: the exact engine, the
cells, approximate RTRL, V-trace and the RL losses. See ``docs/testing.md``.

    pip install -e ".[test,mutation]"
    python tools/mutation.py                 # every group, then the report (tens of minutes)
    python tools/mutation.py exact cells     # some groups
    python tools/mutation.py --report        # the report of what has run, nothing more

Each group runs `mutmut <https://mutmut.readthedocs.io>`_ in its own scratch copy of the
repository (``/tmp/rtrl-mutation/<group>`` by default), never in the working tree, so a crash
cannot leave a mutant in the source: mutmut mutates one function at a time in that copy and runs
only the tests that reach the function, chosen from the group's fast, relevant test files.

A rerun starts from a fresh copy; ``--resume`` keeps the copy and mutmut's results and goes on
where an interrupted run stopped (``--time-limit`` stops a run cleanly after so many seconds,
keeping what it finished: a long run can be done in pieces).

The report counts, per file: killed (a test failed, or the mutant hung and timed out), survived,
no tests (no selected test reaches the function), and the score ``killed / (all − equivalent)``.
Survivors that a person judged equivalent or harmless are listed, with the reason, in
``tools/mutation_equivalent.txt``; a survivor is matched there by its function and its changed
lines, so the list holds while those lines are unchanged. Every other survivor is printed as a
diff. Exit status 1 if a file's score is under ``--bar`` (90 % by default).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = ROOT / "tools" / "mutation_equivalent.txt"

# group: (files to mutate, functions to mutate or None for all, the tests that may kill them)
GROUPS: dict[str, tuple[list[str], list[str] | None, list[str]]] = {
    "exact": (["src/rtrl/exact.py"], None,
              ["tests/test_exact.py", "tests/test_exact_paths.py", "tests/test_cells.py", "tests/test_kernels.py"]),
    "cells": (["src/rtrl/cells/*.py"], None,
              ["tests/test_cells.py", "tests/test_exact.py", "tests/test_exact_paths.py"]),
    "approx": (["src/rtrl/approx.py"], None, ["tests/test_approx.py"]),
    "vtrace": (["src/rtrl/rl/vtrace.py"], None, ["tests/test_r2ac.py"]),
    # ppo.py: the losses only (gae and PPO.loss); the training loop is tested end to end elsewhere
    "ppo-loss": (["src/rtrl/rl/ppo.py"], ["x_gae", "xǁPPOǁloss"], ["tests/test_ppo.py", "-k", "formula"]),
}
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}


def scratch_copy(dest: Path) -> None:
    """The repository's tracked and untracked-but-not-ignored files, copied to ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def configure(work: Path, group: str) -> None:
    files, _, tests = GROUPS[group]
    toml = (work / "pyproject.toml").read_text()
    toml = re.sub(r"\n\[tool\.mutmut\].*?(?=\n\[|\Z)", "", toml, flags=re.S)
    toml += ("\n[tool.mutmut]\n"
             'source_paths = ["src/"]\n'
             f"only_mutate = {json.dumps(files)}\n"
             f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
             'pytest_add_cli_args = ["-p", "no:cacheprovider"]\n'
             'process_isolation = "forkserver"\n'  # torch is not fork-safe after use
             "use_git_change_detection = false\n")
    (work / "pyproject.toml").write_text(toml)


def run_group(group: str, base: Path, resume: bool, time_limit: float | None, children: int) -> None:
    work = base / group
    if not (resume and (work / "mutants").is_dir()):
        scratch_copy(work)
    configure(work, group)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutmut puts mutants/src first itself
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(children)]
    functions = GROUPS[group][1]
    if functions:
        module = GROUPS[group][0][0].removeprefix("src/").removesuffix(".py").replace("/", ".")
        cmd += [f"{module}.{f}__mutmut_*" for f in functions]
    print(f"== {group}: {' '.join(cmd[1:])} (in {work})", flush=True)
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=time_limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)  # mutmut saves every finished mutant's result as it goes
        out, _ = proc.communicate()
        print(f"   stopped after {time_limit:.0f} s; go on with --resume", flush=True)
    tail = [line for line in out.replace("\r", "\n").splitlines() if line.strip()][-3:]
    print("   " + "\n   ".join(tail), flush=True)


def mutant_diff(work: Path, name: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}).stdout
    return [line for line in out.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def signature(name: str, diff: list[str]) -> str:
    """A survivor's identity that holds while its lines are unchanged: function | -old | +new."""
    function = re.sub(r"__mutmut_\d+$", "", name)
    return " | ".join([function] + [" ".join(line.split()) for line in diff])


def load_equivalent() -> dict[str, str]:
    """``tools/mutation_equivalent.txt``: blocks of a signature line and a ``why:`` line."""
    known, sig = {}, None
    for line in EQUIVALENT.read_text().splitlines() if EQUIVALENT.exists() else []:
        if line.startswith("why:") and sig:
            known[sig] = line[4:].strip()
        elif line.strip() and not line.startswith("#"):
            sig = line.strip()
    return known


def report(groups: list[str], base: Path, bar: float) -> bool:
    known, ok = load_equivalent(), True
    rows = []
    for group in groups:
        work = base / group
        metas = sorted((work / "mutants").glob("**/*.py.meta")) if (work / "mutants").is_dir() else []
        functions = GROUPS[group][1]
        for meta in metas:
            path = str(meta.relative_to(work / "mutants")).removesuffix(".meta")
            codes = json.loads(meta.read_text())["exit_code_by_key"]
            if functions:
                codes = {k: v for k, v in codes.items() if any(f"{f}__mutmut_" in k for f in functions)}
            if not codes:
                continue
            counts: dict[str, int] = {}
            survivors, equivalent = [], []
            for name, code in sorted(codes.items()):
                status = STATUS.get(code, "suspicious")
                if status in ("survived", "no tests"):
                    diff = mutant_diff(work, name)
                    sig = signature(name.split(".")[-1], diff)
                    if sig in known:
                        equivalent.append((name, known[sig]))
                        status = "equivalent"
                    else:
                        survivors.append((name, status, diff))
                counts[status] = counts.get(status, 0) + 1
            killed = counts.get("killed", 0) + counts.get("timeout", 0)
            judged = len(codes) - counts.get("equivalent", 0) - counts.get("not checked", 0)
            score = killed / judged if judged else 1.0
            ok &= score >= bar and not counts.get("not checked")
            rows.append((path, len(codes), killed, counts, score))
            print(f"\n{path}: {len(codes)} mutants, {killed} killed, score {100 * score:.1f} % "
                  f"({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))})")
            for name, why in equivalent:
                print(f"  equivalent  {name}: {why}")
            for name, status, diff in survivors:
                print(f"  {status:10s}  {name}\n" + "\n".join(f"      {line}" for line in diff)
                      + f"\n      signature: {signature(name.split('.')[-1], diff)}")
    if rows:
        total = sum(r[1] - r[3].get("equivalent", 0) - r[3].get("not checked", 0) for r in rows)
        killed = sum(r[2] for r in rows)
        print(f"\nall files: {killed} of {total} non-equivalent mutants killed, "
              f"{100 * killed / max(total, 1):.1f} % (bar {100 * bar:.0f} % per file)")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("groups", nargs="*", metavar="GROUP", help=f"default: all of {', '.join(GROUPS)}")
    ap.add_argument("--report", action="store_true", help="only report what has run")
    ap.add_argument("--resume", action="store_true", help="keep the scratch copy and its results, go on")
    ap.add_argument("--time-limit", type=float, help="seconds per group before stopping cleanly")
    ap.add_argument("--children", type=int, default=1, help="mutants tested at once (default 1)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/rtrl-mutation"), help="where the scratch copies live")
    ap.add_argument("--bar", type=float, default=0.9, help="the score every file must reach (default 0.9)")
    args = ap.parse_args(argv)
    groups = args.groups or list(GROUPS)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        ap.error(f"unknown group(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print('mutmut is not installed: pip install -e ".[mutation]"', file=sys.stderr)
        return 2
    if not args.report:
        for group in groups:
            run_group(group, args.dir, args.resume, args.time_limit, args.children)
    return 0 if report(groups, args.dir, args.bar) else 1


if __name__ == "__main__":
    sys.exit(main())
