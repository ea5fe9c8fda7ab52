"""Suite-wide rules.

* Where every optional package is installed (CI sets ``RTRL_NO_SKIPS=1`` after installing them
  all), a skipped test is a failure, unless it needs a CUDA device. A suite that skips because its
  import broke would otherwise pass silently.
* ``device="auto"`` means the CPU in every test outside ``tests/test_cuda.py``: the suite's
  tolerances, budgets and learning thresholds were measured on the CPU, so on a GPU machine its
  tests stay the tests they are (the CUDA tests ask for ``"cuda"`` themselves). CUDA is hidden
  from the test's process (``torch.cuda.is_available``) and from every process it starts
  (``CUDA_VISIBLE_DEVICES``).
"""

from __future__ import annotations

import os

import pytest
import torch

CUDA_TESTS = ("test_cuda.py",)


@pytest.fixture(autouse=True)
def _cpu_unless_a_cuda_test(request, monkeypatch):
    if request.node.path.name in CUDA_TESTS:
        return
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

_skipped: list[pytest.TestReport] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):  # xfails report as skipped too: not ours
        _skipped.append(report)


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("RTRL_NO_SKIPS") != "1":
        return
    bad = [r for r in _skipped if "CUDA" not in _reason(r)]
    if bad:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        tr.write_line(f"RTRL_NO_SKIPS=1: {len(bad)} test(s) skipped although every optional package is installed:",
                      red=True)
        for r in bad:
            tr.write_line(f"  {r.nodeid}: {_reason(r)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
