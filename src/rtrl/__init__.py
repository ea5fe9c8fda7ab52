"""rtrl: exact Real-Time Recurrent Learning for PyTorch.

    from rtrl.nn import ELSTM

The names below load on first use, so that a tool that needs no tensors (``python -m
rtrl.rl.plot``) starts without importing torch. Where gymnasium is installed, rtrl's own
environments are registered with it here (``gym.make("rtrl-Recall-v0")``).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

_HOME = {"exact_rtrl": "rtrl.exact", "RecurrentState": "rtrl.state", "Sensitivities": "rtrl.state",
         **{name: "rtrl.nn" for name in ("ELSTM", "DiagonalLinearRNN", "LRU", "RTU", "LinearRTU", "MODULES",
                                         "ElementwiseRNN")}}
__all__ = sorted(_HOME)


def _register_gymnasium_envs() -> None:
    if importlib.util.find_spec("gymnasium") is not None:
        from rtrl.rl.envs import memory_chain, recall

        recall.register_gymnasium()
        memory_chain.register_gymnasium()


_register_gymnasium_envs()


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'rtrl' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])
