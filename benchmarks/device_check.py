"""Everything a person with one GPU should run once: the CUDA tests and every GPU figure, in < 8 minutes.

    python benchmarks/device_check.py                          # on a machine with a CUDA device
    python benchmarks/device_check.py --device cpu --quick     # the same steps on the CPU, tiny (a smoke run)

Written for a device that is lent once, briefly, with no network: whatever happens it ends within
``--budget`` seconds (default 470: under the 600 s a lent machine gives one command), each step in a
process of its own with its own time limit, and every step's result is written to ``--out``
(default ``$OUT``, else ``./device_check_out``) the moment it ends, so that a kill loses only the
step under way (whose output so far is in ``<step>.log`` beside ``device_check.json``).
It needs no install: ``rtrl`` is imported from this checkout's ``src/``, and envs that need an
optional package fall back to rtrl's own ``rtrl-Recall-v0``.

Steps, in order of what the first GPU run must not miss:
  preflight  versions (torch, CUDA, driver), the device, its free memory, the disk, which optional
             packages import; stops the check if torch, rtrl or pytest cannot run (nothing else could)
  tests      ``pytest tests/test_cuda.py`` with ``RTRL_TEST_DEVICE`` = the device: exact RTRL, R2AC,
             PPO and copy-task training equal to the CPU's, a run resumed across devices, a CUDA-trained
             run's export. Every failing test is printed with its reason; any skip is unexpected and
             fails the step (with ``--device cpu`` the tests run with the CPU in the device's place)
  syncs      one R2AC and one PPO update under ``torch.cuda.set_sync_debug_mode("warn")``: how many
             host syncs each takes, and where
  modules    ``benchmarks/rtrl_speed.py``: per-step RTRL over chunked exact RTRL at the paper's size,
             and exact RTRL over the same module's truncated BPTT (the bar: <= 1.15 on a GPU)
  r2ac       ``rtrl train --device D`` against ``--device cpu``, end to end (frames/s, greedy return)
  dense      full RTRL of a dense RNN against the eLSTM's exact RTRL, time per online step as N grows

Exit status 0 when every step passed, 1 otherwise (the summary says which and why).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))  # this checkout's rtrl, installed or not

# (step, its own time limit in seconds); the budget left cuts a later step's limit shorter
STEPS = (("tests", 170), ("syncs", 45), ("modules", 100), ("r2ac", 90), ("dense", 45))
RESULT = "DEVICE-CHECK-RESULT "  # a step's last line: this prefix, then its result as JSON


def child_env(**extra: str) -> dict:
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1", **extra)


def run_logged(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> tuple[int, str]:
    """Run ``cmd`` in its own process group, its output copied line by line to ``log`` and to our
    stdout as it comes; killed (the whole group) after ``timeout`` s (exit code 124)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env or child_env(), start_new_session=True, errors="replace")
    lines: list[str] = []

    def pump() -> None:
        with open(log, "w") as f:
            for line in proc.stdout:
                lines.append(line)
                f.write(line)
                f.flush()
                if not line.startswith(RESULT):
                    print(line, end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        code = 124
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the step and whatever it started
        except ProcessLookupError:
            pass
        proc.wait()
    reader.join(timeout=10)
    return code, "".join(lines)


def parse_result(text: str) -> dict:
    """The step's result line, or what can be said without it."""
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT):
            try:
                return json.loads(line[len(RESULT):])
            except json.JSONDecodeError as e:
                return dict(ok=False, summary=f"unreadable result line ({e})")
    tail = [line for line in text.strip().splitlines() if line.strip()][-3:]
    return dict(ok=False, summary="no result: " + (" | ".join(tail)[-300:] if tail else "no output"))


def emit(result: dict) -> None:
    print(RESULT + json.dumps(result), flush=True)


# -- the steps, each run as `device_check.py --step NAME` in a process of its own ------------------------

def preflight(device: str, out: Path) -> dict:
    import importlib
    import platform
    import shutil

    info: dict = dict(python=platform.python_version(), cpus=os.cpu_count(), root=str(ROOT))
    try:
        import torch

        info.update(torch=torch.__version__, cuda_build=torch.version.cuda,
                    cuda_available=torch.cuda.is_available())
    except Exception as e:
        return dict(ok=False, summary=f"torch does not import: {type(e).__name__}: {e}", **info)
    try:
        import rtrl

        info["rtrl"] = str(Path(rtrl.__file__).parent)
    except Exception as e:
        return dict(ok=False, summary=f"rtrl does not import from {SRC}: {type(e).__name__}: {e}", **info)
    optional = {}
    for name in ("pytest", "numpy", "gymnasium", "popgym", "onnx", "onnxruntime", "tqdm", "tensorboard",
                 "matplotlib"):
        try:
            importlib.import_module(name)
            optional[name] = True
        except Exception:
            optional[name] = False
    info["imports"] = optional
    if not optional["pytest"] or not optional["numpy"]:
        return dict(ok=False, summary="pytest and numpy are needed to run the checks", **info)
    info["env"] = "popgym-RepeatPreviousEasy-v0" if optional["popgym"] else "rtrl-Recall-v0"
    disk = shutil.disk_usage(out)
    info["disk_free_gb"] = round(disk.free / 1e9, 1)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return dict(ok=False, summary=f"no CUDA device (torch {torch.__version__}, built with CUDA "
                                          f"{torch.version.cuda})", **info)
        dev = torch.device(device)
        free, total = torch.cuda.mem_get_info(dev)
        props = torch.cuda.get_device_properties(dev)
        info.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                    devices=torch.cuda.device_count(), memory_free_gb=round(free / 1e9, 1),
                    memory_total_gb=round(total / 1e9, 1),
                    cudnn=torch.backends.cudnn.version())
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10)
            info["driver"] = smi.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
        x = torch.randn(256, 256, device=dev)
        torch.cuda.synchronize()
        info["matmul_ok"] = bool(torch.isfinite(x @ x).all())
        what = (f"{props.name} ({info['memory_free_gb']} of {info['memory_total_gb']} GB free), "
                f"CUDA {torch.version.cuda}")
    else:
        from rtrl.budget import available_bytes, fmt_bytes

        info["memory_free"] = fmt_bytes(available_bytes(torch.device("cpu")) or 0)
        what = f"CPU ({info['cpus']} cores, {info['memory_free']} free)"
    missing = [k for k, v in optional.items() if not v]
    summary = f"torch {torch.__version__} on {what}; RL env {info['env']}" + (
        f"; not installed: {', '.join(missing)}" if missing else "")
    return dict(ok=True, summary=summary, **info)


def step_tests(device: str, quick: bool, out: Path, tests: list[str]) -> dict:
    """pytest of ``tests`` on ``device``; reads its JUnit XML for each failure's reason and each skip's."""
    import xml.etree.ElementTree as ET

    xml = out / "tests.xml"
    xml.unlink(missing_ok=True)
    # -v: each test's name is printed as it starts, so a step cut by its time limit shows which test hung
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-o", "addopts=", "--tb=short",
           "-rfEs", f"--junitxml={xml}", *tests]
    print(f"RTRL_TEST_DEVICE={device} {' '.join(cmd[1:])}", flush=True)
    code = subprocess.run(cmd, cwd=ROOT, env=child_env(RTRL_TEST_DEVICE=device)).returncode
    if not xml.is_file():
        return dict(ok=False,
                    summary=f"pytest ended with code {code} and wrote no report (collection error?)")
    failed, skipped, passed = [], [], 0
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name')}"
        bad = case.find("failure")
        bad = bad if bad is not None else case.find("error")
        skip = case.find("skipped")
        if bad is not None:
            text = (bad.text or "").strip().splitlines()
            reason = [line for line in text if line.startswith("E ")][:6] or text[-6:]
            failed.append(dict(test=name, message=(bad.get("message") or "")[:500],
                               reason="\n".join(reason)[:1500]))
        elif skip is not None:
            skipped.append(dict(test=name, reason=(skip.get("message") or "")[:300]))
        else:
            passed += 1
    print(f"\n{passed} passed, {len(failed)} failed, {len(skipped)} skipped")
    for f in failed:
        print(f"FAILED {f['test']}: {f['message']}\n{f['reason']}")
    for s in skipped:  # every test here can run on the device it was given: a skip hides a check
        print(f"UNEXPECTED SKIP {s['test']}: {s['reason']}")
    ok = code == 0 and not failed and not skipped and passed > 0
    summary = f"{passed} passed, {len(failed)} failed"
    summary += f", {len(skipped)} skipped (unexpected)" if skipped else ""
    if failed:
        first = failed[0]
        summary += f"; first failure: {first['test']}: {(first['message'] or first['reason'])[:200]}"
    return dict(ok=ok, summary=summary, passed=passed, failed=failed, skipped=skipped)


def _syncs_of(fn, cuda: bool) -> tuple[int, dict]:
    """Run ``fn`` with CUDA's sync debug mode on "warn": the number of host syncs and where they are."""
    import collections
    import warnings

    import torch

    if not cuda:
        fn()
        return 0, {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    where = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
    return len(syncs), dict(where.most_common(8))


def step_syncs(device: str, quick: bool) -> dict:
    import dataclasses

    import torch

    from rtrl.rl.actors import ActorLoop
    from rtrl.rl.config import TrainConfig, build_agent
    from rtrl.rl.envs import make_env
    from rtrl.rl.learner import Learner
    from rtrl.rl.ppo import PPO, Collector
    from rtrl.utils import copy_weights_

    dev, cuda = torch.device(device), device.startswith("cuda")
    cfg = TrainConfig(num_envs=8 if quick else 64, unroll=10, hidden_size=32 if quick else 128, num_actors=0)
    env = make_env(cfg.env, cfg.num_envs, seed=0)
    out: dict = {}
    for algo in ("r2ac", "ppo"):
        torch.manual_seed(0)
        actor = build_agent(cfg, env)
        learner_agent = build_agent(cfg, env)
        copy_weights_(learner_agent, actor)
        learner_agent.to(dev)
        if algo == "r2ac":
            learner = Learner(learner_agent, cfg.learner_config(), cfg.num_streams)
            loop = ActorLoop(env, actor, cfg.unroll, 0, seed=0)
            with torch.no_grad():
                rollouts = [loop.rollout()[0] for _ in range(2)]
            update = lambda i: learner.update(rollouts[i])  # noqa: E731
        else:
            ppo_cfg = dataclasses.replace(cfg, algo="ppo", ppo_minibatches=2, ppo_epochs=2)
            learner = PPO(learner_agent, ppo_cfg)
            collector = Collector(env, learner_agent, cfg.unroll, seed=0, actor=actor)
            segs = [collector.collect()[0] for _ in range(2)]
            update = lambda i: learner.update(segs[i])  # noqa: E731
        update(0)  # warm-up: first-call allocations and kernel choices are not the steady state
        n, where = _syncs_of(lambda: update(1), cuda)
        out[algo] = dict(syncs=n, where=where)
        print(f"{algo}: one update, {n} host syncs" + (f": {where}" if where else "") if cuda else
              f"{algo}: one update ran (host syncs are counted on a CUDA device only)", flush=True)
    env.close()
    if not cuda:
        return dict(ok=True, summary="updates ran on the CPU; syncs counted on a GPU only", **out)
    where = f"{json.dumps(out['r2ac']['where'])}; {json.dumps(out['ppo']['where'])}"
    counts = f"R2AC {out['r2ac']['syncs']}, PPO {out['ppo']['syncs']}"
    return dict(ok=True, summary=f"host syncs per update: {counts} (where: {where})", **out)


def step_modules(device: str, quick: bool, budget: float) -> dict:
    tiny = ["--no-elstm", "--cells", "lru", "--cell-size", "16", "--cell-steps", "5", "--reps", "1"]
    args = ["--device", device, "--no-memory"] + (tiny if quick else ["--reps", "3"])
    try:
        proc = subprocess.run([sys.executable, "benchmarks/rtrl_speed.py", *args], cwd=ROOT, env=child_env(),
                              timeout=max(budget - 5, 1))
    except subprocess.TimeoutExpired:
        return dict(ok=False, summary=f"rtrl_speed.py timed out after {budget - 5:.0f} s "
                                      "(the tables it finished are above, in modules.log)")
    return dict(ok=proc.returncode == 0, summary=f"rtrl_speed.py exit {proc.returncode} (tables above)")


def _per_step(module, x, device) -> float:
    """Seconds per online step (segments of one step, backward after each) on ``device``."""
    import torch

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


def step_dense(device: str, quick: bool) -> dict:
    import torch

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
    return dict(ok=True, summary=f"dense RNN x{grow:.1f} per doubling of N at N={dense[-1][0]} "
                                 "(theory up to 16); eLSTM rows above", rows=rows)


def step_r2ac(device: str, quick: bool, budget: float, env_name: str) -> dict:
    import tempfile

    frames = 20_000 if quick else 100_000
    results, errors = {}, []
    devices = list(dict.fromkeys([device, "cpu"]))
    for i, dev in enumerate(devices):
        left = budget - 2
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "rtrl.cli", "train", "--preset", "small", "--env", env_name, "--core", "rtrl-lru",
                   "--total-frames", str(frames), "--device", dev, "--eval-episodes", "20",
                   "--run-dir", f"{tmp}/run", "--no-progress"]
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True,
                                      timeout=max(left / (len(devices) - i), 1))
            except subprocess.TimeoutExpired:
                errors.append(f"--device {dev}: timed out")
                print(f"--device {dev}: timed out", flush=True)
                continue
            wall = time.perf_counter() - t0
            budget -= wall
        try:  # stdout holds the result as JSON; stderr (warnings, the run folder) is kept apart
            out = json.loads(proc.stdout[proc.stdout.index("{"):proc.stdout.rindex("}") + 1])
        except ValueError:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            errors.append(f"--device {dev}: exit {proc.returncode}: {tail[:200]}")
            print(errors[-1], flush=True)
            continue
        greedy = out.get("eval", {}).get("greedy", {}).get("mean")
        results[dev] = dict(fps=frames / wall, wall_s=round(wall, 1), greedy=greedy)
        print(f"--device {dev}: {frames / wall:,.0f} frames/s end to end (wall {wall:.1f} s, start-up "
              f"included), greedy return {greedy}", flush=True)
    summary = "; ".join(f"{k}: {v['fps']:,.0f} frames/s" for k, v in results.items())
    if device in results and "cpu" in results and device != "cpu":
        ratio = results[device]["fps"] / results["cpu"]["fps"]
        summary = f"{device}/cpu end-to-end frames/s: {ratio:.2f} ({summary})"
    return dict(ok=not errors, summary="; ".join([summary] + errors).strip("; "), env=env_name, frames=frames,
                results=results)


# -- the driver ----------------------------------------------------------------------------------------

def write(out: Path, report: dict) -> None:
    tmp = out / ".device_check.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    os.replace(tmp, out / "device_check.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every step")
    ap.add_argument("--out", default=os.environ.get("OUT") or "device_check_out",
                    help="folder for device_check.json and each step's log "
                    "(default: $OUT, else ./device_check_out)")
    ap.add_argument("--budget", type=float, default=470.0, help="seconds for the whole check (default 470)")
    ap.add_argument("--only", default="", help="comma-separated steps to run (default: all): "
                    + ", ".join(name for name, _ in STEPS))
    ap.add_argument("--tests", nargs="+", default=["tests/test_cuda.py"], help="test files of the tests step")
    ap.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step in this process
    ap.add_argument("--env-name", default="rtrl-Recall-v0", help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    if args.step:  # a step, in its own process: its output, then its result line
        try:
            if args.step == "preflight":
                result = preflight(args.device, out)
            elif args.step == "tests":
                result = step_tests(args.device, args.quick, out, args.tests)
            elif args.step == "syncs":
                result = step_syncs(args.device, args.quick)
            elif args.step == "modules":
                result = step_modules(args.device, args.quick, args.budget)
            elif args.step == "r2ac":
                result = step_r2ac(args.device, args.quick, args.budget, args.env_name)
            elif args.step == "dense":
                result = step_dense(args.device, args.quick)
            else:
                result = dict(ok=False, summary=f"unknown step {args.step!r}")
        except Exception as e:  # a step's own failure is its result, with the traceback in its log
            import traceback

            traceback.print_exc()
            result = dict(ok=False, summary=f"{type(e).__name__}: {str(e)[:300]}")
        emit(result)
        return

    deadline = time.monotonic() + args.budget
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - {name for name, _ in STEPS}
    if unknown:
        raise SystemExit(f"unknown step(s) {', '.join(sorted(unknown))}; "
                         f"steps: {', '.join(n for n, _ in STEPS)}")
    report = dict(device=args.device, quick=args.quick, budget_s=args.budget,
                  started=time.strftime("%Y-%m-%dT%H:%M:%S"), steps={})
    me = [sys.executable, str(Path(__file__).resolve()), "--device", args.device, "--out", str(out)] + \
        (["--quick"] if args.quick else [])

    def step(name: str, limit: float, extra: list[str] = ()) -> dict:
        left = deadline - time.monotonic() - 5  # 5 s kept to write the summary
        if left < 5:
            result = dict(ok=False, status="not run", summary="no time left in the budget")
        else:
            timeout = min(limit, left)
            print(f"\n== {name} (limit {timeout:.0f} s) ==", flush=True)
            t0 = time.perf_counter()
            cmd = [*me, "--step", name, "--budget", str(timeout), *extra]
            code, text = run_logged(cmd, out / f"{name}.log", timeout)
            result = parse_result(text)
            if code == 124:
                result.update(ok=False, summary=f"timed out after {timeout:.0f} s "
                                                f"(partial output in {name}.log)")
            result["status"] = "ok" if result.get("ok") else ("timeout" if code == 124 else "failed")
            result["seconds"] = round(time.perf_counter() - t0, 1)
        report["steps"][name] = result
        write(out, report)  # now, not at the end: a kill loses only the step under way
        print(f"-> {name}: {result['status']}: {result.get('summary', '')}", flush=True)
        return result

    pre = step("preflight", 30)
    if pre.get("ok"):
        for name, limit in STEPS:
            if only and name not in only:
                continue
            extra = ["--tests", *args.tests] if name == "tests" else \
                ["--env-name", pre.get("env", "rtrl-Recall-v0")] if name == "r2ac" else []
            step(name, limit, extra)
    report["total_s"] = round(args.budget - (deadline - time.monotonic()), 1)
    report["ok"] = all(r.get("ok") for r in report["steps"].values())
    write(out, report)
    print("\n== summary ==")
    for name, r in report["steps"].items():
        print(f"{name:>9}: {r['status']}: {r.get('summary', '')}")
    print(f"total {report['total_s']:.0f} s; results in {out / 'device_check.json'}")
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
