"""Input checks shared by every recurrent layer: an error that names the problem and the fix."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor

from rtrl.state import RecurrentState

_known = threading.local()  # .finite: the caller vouches that every x in its block is finite


@contextmanager
def finite_inputs() -> Iterator[None]:
    """For callers whose inputs are finite by construction (the copy task's one-hot tokens): the
    layers in the block skip their check that ``x`` holds no NaN/Inf, which costs a host sync per
    segment on a GPU (every step, when learning online). Every other check still runs."""
    before = getattr(_known, "finite", False)
    _known.finite = True
    try:
        yield
    finally:
        _known.finite = before


def check_sizes(input_size: int, hidden_size: int) -> None:
    """A layer's sizes must be positive integers."""
    if input_size < 1 or hidden_size < 1:
        raise ValueError(f"input_size and hidden_size must be positive, got {input_size} and {hidden_size}")


def check_segment(name: str, x: Tensor, input_size: int, weight: Tensor, state: RecurrentState,
                  state_width: int, sensitivity_shapes: Optional[Sequence[tuple[int, ...]]],
                  reset: Optional[Tensor], state_dtype: Optional[torch.dtype] = None) -> None:
    """Validate one segment's inputs for layer ``name``.

    ``x (T, B, input_size)`` must match ``weight``'s dtype and device; the state's tensors must be
    ``state_dtype`` (default ``x``'s; complex cells pair a complex state with real ``x``); ``state.c`` must be
    ``(B, state_width)``; ``state.sensitivities``' fields, if any, ``(B, *shape)`` for the shapes in
    ``sensitivity_shapes``; ``reset`` a bool ``(T, B)`` mask; ``x`` finite.
    """
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} expects x of shape (T, B, input_size), got {shape}; "
                         "add a time dimension with x.unsqueeze(0) for a single step")
    T, B, D = x.shape
    if D != input_size:
        raise ValueError(f"{name} was built for input_size={input_size}, got x with last dim {D}")
    if T == 0 or B == 0:
        raise ValueError(f"{name} got an empty segment x of shape {tuple(x.shape)}")
    if x.dtype != weight.dtype or x.device != weight.device:
        raise ValueError(f"x is {x.dtype} on {x.device} but {name}'s parameters are {weight.dtype} on "
                         f"{weight.device}; move one of them with .to()")
    if not isinstance(state, RecurrentState):
        raise TypeError(f"state must be a RecurrentState (from {name}.initial_state), got {type(state).__name__}")
    tensors = [state.c] + (list(state.sensitivities) if state.sensitivities is not None else [])
    state_dtype = state_dtype or x.dtype
    for s in tensors:
        if s.dtype != state_dtype or s.device != x.device:
            raise ValueError(f"state is {s.dtype} on {s.device} but {name} needs {state_dtype} on {x.device} "
                             f"for x of {x.dtype}; use state.map(lambda t: t.to(device, dtype)) or a fresh initial_state")
    if state.c.shape != (B, state_width):
        raise ValueError(f"state.c has shape {tuple(state.c.shape)} but x needs (B={B}, {state_width}); "
                         "the state and the input must hold the same streams")
    if state.sensitivities is not None and sensitivity_shapes is not None:
        for field, s, shape in zip(state.sensitivities._fields, state.sensitivities, sensitivity_shapes):
            if s.shape != (B, *shape):
                raise ValueError(f"state.sensitivities.{field} has shape {tuple(s.shape)}, expected {(B, *shape)}")
    if reset is not None:
        if not isinstance(reset, Tensor) or reset.dtype != torch.bool:
            raise ValueError("reset must be a bool tensor of shape (T, B), True where an episode starts")
        if reset.shape != (T, B):
            raise ValueError(f"reset has shape {tuple(reset.shape)}, expected (T, B) = {(T, B)}")
        if reset.device != x.device:
            raise ValueError(f"reset is on {reset.device} but x is on {x.device}")
    if not getattr(_known, "finite", False) and not torch.isfinite(x).all():
        raise ValueError(f"x holds NaN or Inf values; {name} refuses them, since they would poison the "
                         "carried state and sensitivities for the rest of the stream")
