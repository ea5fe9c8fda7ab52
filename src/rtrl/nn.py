"""``torch.nn`` modules for element-wise recurrent layers, used like ``nn.LSTM``.

    m = ELSTM(input_size, hidden_size, learning="rtrl")   # or "bptt", "spatial"
    state = m.initial_state(batch_size)
    y, state = m(x, state, reset=None)                    # x (T, B, D) -> y (T, B, hidden_size)
    loss(y).backward()

Modules: :class:`ELSTM`, :class:`DiagonalLinearRNN`, :class:`LRU`, :class:`RTU` (``MODULES`` maps
names to them), and :class:`TwoLayer`, two of them stacked (top exact, bottom within the segment).
``hidden_size`` is the width of ``y``; ``state_size`` the number of recurrent units (the same,
except for the RTU, whose ``hidden_size/2`` complex units give two features each). The LRU and
RTU states (and sensitivities) are complex tensors paired with real parameters.

Reset semantics, written once: ``reset[t, b] = True`` means a new episode starts at step ``t``
of stream ``b``; the state (and, for RTRL, the sensitivities) is zeroed *before* step ``t``
is computed, so step ``t`` sees ``c_{t-1} = 0``.

Learning rules:

* ``"rtrl"``: the returned state carries ``c_T`` and the sensitivities, detached. After
  ``backward()`` every parameter of the layer holds the exact, untruncated gradient of this
  segment's loss: segment after segment with fixed weights, the gradients add up to the BPTT
  gradient of the whole sequence. The input ``x`` gets the within-segment gradient (exact RTRL
  for the layers below is the intractable multi-layer case).
* ``"bptt"``: plain backpropagation: gradient flows into the incoming state if it requires grad
  (pass ``state.detach()`` for truncated BPTT).
* ``"spatial"``: no credit through time: the gradient of step ``t`` treats ``c_{t-1}`` as a
  constant (only the step's own input, gates and recurrent parameters get it); no sensitivities
  are carried and the returned state is detached.

Under ``torch.no_grad()`` a state without sensitivities (``initial_state(B,
sensitivities=False)``) takes the cheap inference path: the scan alone.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtrl.checks import check_segment
from rtrl.cells import DiagonalLinearCell, ELSTMCell, ElementwiseCell, LRUCell, RTUCell
from rtrl.exact import exact_rtrl, scan
from rtrl.state import RecurrentState, Sensitivities

LEARNING_RULES = ("rtrl", "bptt", "spatial")


class ElementwiseRNN(nn.Module):
    """One element-wise recurrent layer (``cell``) with an optional output gate.

    With ``output_gate=True``: ``y_t = c_t ⊙ σ(W_o [x_t; c_t] + b_o)`` (the paper's eLSTM output;
    feedforward, so its gradient is exact by plain backprop). Otherwise ``y_t = c_t``.
    """

    def __init__(self, cell: ElementwiseCell, learning: str = "rtrl", output_gate: bool = True) -> None:
        super().__init__()
        if learning not in LEARNING_RULES:
            raise ValueError(f"learning must be one of {LEARNING_RULES}, got {learning!r}")
        self.cell = cell
        self.learning = learning
        self.input_size = cell.input_size
        self.state_size = cell.hidden_size
        self.hidden_size = cell.hidden_size  # width of y; a subclass with another readout changes it
        self.output_gate = nn.Linear(cell.input_size + cell.hidden_size, cell.hidden_size) if output_gate else None

    def initial_state(
        self, batch_size: int, sensitivities: Optional[bool] = None, device=None, dtype=None
    ) -> RecurrentState:
        """Zero state for ``batch_size`` streams, with zero sensitivities when learning by RTRL.

        ``sensitivities=False`` gives a state for the cheap inference path (use it under
        ``torch.no_grad()``, e.g. in actors)."""
        w = self.cell.weight_ih
        device, dtype = device or w.device, dtype or w.dtype
        if sensitivities is None:
            sensitivities = self.learning == "rtrl"
        c = torch.zeros(batch_size, self.state_size, device=device, dtype=self.cell.state_dtype(dtype))
        sens = Sensitivities.zeros(self.cell, batch_size, device, dtype) if sensitivities else None
        return RecurrentState(c, sens)

    def forward(
        self, x: Tensor, state: Optional[RecurrentState] = None, reset: Optional[Tensor] = None
    ) -> tuple[Tensor, RecurrentState]:
        """``x (T, B, D)``, ``state`` for ``B`` streams (zero if ``None``), ``reset (T, B)`` bool.

        Returns ``y (T, B, hidden_size)`` and the state after the segment.
        """
        if state is None:
            state = self.initial_state(x.shape[1] if x.dim() == 3 else 1, device=x.device, dtype=x.dtype)
        self._check_inputs(x, state, reset)
        keep = None if reset is None else (~reset).to(x.dtype)
        cell = self.cell
        p = F.linear(x, cell.weight_ih, cell.bias).unflatten(-1, (cell.num_gates, self.state_size))
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or state.c.requires_grad or any(q.requires_grad for q in self.parameters())
        )
        if self.learning == "rtrl":
            if needs_grad and state.sensitivities is None:
                raise ValueError(
                    "learning='rtrl' needs sensitivities in the state to compute exact gradients; "
                    "start from m.initial_state(batch_size) (or run under torch.no_grad() for inference)"
                )
            c0 = state.c.detach()
        elif self.learning == "spatial":
            c0 = state.c.detach()  # no credit through time, across segments either
        else:
            c0 = state.c
        if not needs_grad and state.sensitivities is None:
            with torch.no_grad():  # the cheap inference path: the scan alone
                c = scan(cell, p, c0, keep, with_prev=False)[1]
            sens = None
        else:
            c, sens = exact_rtrl(cell, x, p, c0, keep, state.sensitivities,
                                 through_time=self.learning != "spatial")
        y = self._readout(x, c)
        c_last = c[-1] if self.learning == "bptt" else c[-1].detach()
        return y, RecurrentState(c_last, sens)

    def _readout(self, x: Tensor, c: Tensor) -> Tensor:
        if self.output_gate is None:
            return c
        return c * torch.sigmoid(self.output_gate(torch.cat((x, c), -1)))

    def _check_inputs(self, x: Tensor, state: RecurrentState, reset: Optional[Tensor]) -> None:
        name = type(self).__name__
        if isinstance(state, RecurrentState) and state.sensitivities is not None and self.learning != "rtrl":
            raise ValueError(f"the state carries RTRL sensitivities but {name} learns by {self.learning!r}; "
                             "use initial_state() of this module")
        shapes = None  # (building them costs ~30 us: only when there are sensitivities to check, and once)
        if isinstance(state, RecurrentState) and state.sensitivities is not None:
            key = (tuple(self.cell.weight_ih.shape), tuple(self.cell.weight_hh.shape))
            cached = self.__dict__.get("_sensitivity_shapes")
            if cached is None or cached[0] != key:
                cached = (key, [e.shape[1:] for e in Sensitivities.zeros(self.cell, 0, device="meta")])
                self.__dict__["_sensitivity_shapes"] = cached
            shapes = cached[1]
        check_segment(name, x, self.input_size, self.cell.weight_ih, state, self.state_size, shapes, reset,
                      state_dtype=self.cell.state_dtype(x.dtype))


class ELSTM(ElementwiseRNN):
    """The paper's eLSTM layer: element-wise LSTM recurrence plus the output gate.

    Args:
        input_size: ``D``. hidden_size: ``N``.
        learning: ``"rtrl"`` (exact, untruncated), ``"bptt"`` or ``"spatial"``.
        forget_bias: added to the forget gate's bias at init (0 in the paper).
        output_gate: ``y = c ⊙ σ(W_o [x; c] + b_o)`` if True, else ``y = c``.
    """

    def __init__(self, input_size: int, hidden_size: int, learning: str = "rtrl",
                 forget_bias: float = 0.0, output_gate: bool = True) -> None:
        super().__init__(ELSTMCell(input_size, hidden_size, forget_bias), learning, output_gate)


class DiagonalLinearRNN(ElementwiseRNN):
    """A real diagonal linear recurrent layer (:class:`rtrl.cells.DiagonalLinearCell`)."""

    def __init__(self, input_size: int, hidden_size: int, learning: str = "rtrl",
                 output_gate: bool = True) -> None:
        super().__init__(DiagonalLinearCell(input_size, hidden_size), learning, output_gate)


class LRU(ElementwiseRNN):
    """The Linear Recurrent Unit (Orvieto et al. 2023) as one layer: complex diagonal recurrence
    (:class:`rtrl.cells.LRUCell`) and the readout ``y_t = Re(C c_t) + D x_t``.

    ``C`` (``N×N`` complex) is two real matrices applied outside the recurrence, so, like the
    eLSTM's output gate, it is trained by plain backprop: ``readout`` (no bias, as the paper) acts
    on ``c``'s interleaved real view ``(Re c_1, Im c_1, Re c_2, …)`` (a free view, where
    ``[Re c; Im c]`` would cost a copy each way), so its weight's columns are
    ``(Re C_1, −Im C_1, Re C_2, …)``; ``skip`` is ``D``. Init as the paper: ``C`` ~ N(0, 1/N) per
    part; ``D`` ~ N(0, 1/D_in) (a matrix here, since ``D_in ≠ N`` in general).

    Args:
        input_size: ``D``. hidden_size: ``N`` complex units (and the width of ``y``).
        learning: ``"rtrl"``, ``"bptt"`` or ``"spatial"``.
        r_min, r_max, max_phase: ring init of ``λ`` (the paper's defaults 0, 1, 2π).
    """

    def __init__(self, input_size: int, hidden_size: int, learning: str = "rtrl", r_min: float = 0.0,
                 r_max: float = 1.0, max_phase: float = 2 * math.pi) -> None:
        super().__init__(LRUCell(input_size, hidden_size, r_min, r_max, max_phase), learning, output_gate=False)
        self.readout = nn.Linear(2 * hidden_size, hidden_size, bias=False)
        self.skip = nn.Linear(input_size, hidden_size, bias=False)
        nn.init.normal_(self.readout.weight, std=1 / math.sqrt(hidden_size))
        nn.init.normal_(self.skip.weight, std=1 / math.sqrt(input_size))

    def _readout(self, x: Tensor, c: Tensor) -> Tensor:
        # y = D x + Re(C c): one GEMM on the interleaved real view of c, accumulated into D x
        return torch.addmm(self.skip(x).flatten(0, -2), torch.view_as_real(c).flatten(-2).flatten(0, -2),
                           self.readout.weight.t()).view(*c.shape[:-1], -1)


ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda t: t}


class RTU(ElementwiseRNN):
    """Recurrent Trace Units (Elelimy et al. 2024): complex diagonal recurrence in polar form
    (:class:`rtrl.cells.RTUCell`) and ``y_t = g((Re c_1, Im c_1, Re c_2, Im c_2, …))``, the
    interleaved real view of ``c_t`` (free, where ``[Re c; Im c]`` would cost a copy each way).

    ``hidden_size`` is the width of ``y`` and must be even: ``hidden_size/2`` complex units, each
    giving two features, as the paper's units give the pair ``(c¹, c²)``. ``activation`` ``g``:
    ``"relu"`` (default), ``"tanh"`` or ``"identity"`` (the linear RTU, see :class:`LinearRTU`).
    Here ``g`` is always on the output and the recurrence stays linear (the paper's non-linear
    RTU has ``g`` inside the recurrence; see :mod:`rtrl.cells.rtu`).
    """

    def __init__(self, input_size: int, hidden_size: int, learning: str = "rtrl", activation: str = "relu",
                 r_min: float = 0.0, r_max: float = 1.0, max_phase: float = 2 * math.pi) -> None:
        if hidden_size % 2:
            raise ValueError(f"RTU's hidden_size (the width of y) must be even, got {hidden_size}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        super().__init__(RTUCell(input_size, hidden_size // 2, r_min, r_max, max_phase), learning,
                         output_gate=False)
        self.hidden_size, self.activation = hidden_size, activation

    def _readout(self, x: Tensor, c: Tensor) -> Tensor:
        return ACTIVATIONS[self.activation](torch.view_as_real(c).flatten(-2))

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"


class LinearRTU(RTU):
    """:class:`RTU` with no activation: ``y_t = (Re c_1, Im c_1, Re c_2, …)``."""

    def __init__(self, input_size: int, hidden_size: int, learning: str = "rtrl", r_min: float = 0.0,
                 r_max: float = 1.0, max_phase: float = 2 * math.pi) -> None:
        super().__init__(input_size, hidden_size, learning, "identity", r_min, r_max, max_phase)


MODULES: dict[str, type[ElementwiseRNN]] = {
    "elstm": ELSTM, "diagonal": DiagonalLinearRNN, "lru": LRU, "rtu": RTU, "rtu-linear": LinearRTU,
}


class TwoLayer(nn.Module):
    """Two element-wise layers stacked, ``x -> bottom -> top -> y``, with the API of :class:`ELSTM`.

        m = TwoLayer("elstm", input_size, hidden_size, learning="rtrl")   # or "bptt"

    Learning rules (the paper's Sec 5: exact RTRL of the bottom layer would need the dense
    sensitivities ``dc_top/dθ_bottom``, ``O(N²·D)`` per stream; see :mod:`rtrl.multilayer`):

    * ``"rtrl"`` (the hybrid): the top layer learns by exact RTRL, the bottom layer by BPTT within
      the segment. The top layer's within-segment gradient w.r.t. its input flows into the bottom
      layer; the bottom layer's incoming state is detached, as the top layer's is. So the top
      layer's gradients are the full-BPTT ones, the bottom layer's those of BPTT over the segment
      with both states detached at its start.
    * ``"bptt"``: plain backprop through both layers (pass ``state.detach()`` for truncated BPTT).

    The state is one :class:`RecurrentState` so a learner can keep a slot per stream as for one
    layer: ``c = [c_bottom; c_top]`` ``(B, N_bottom + N_top)`` and the top layer's sensitivities.

    Args:
        layer: a key of ``MODULES`` (``"elstm"``, ``"lru"``, ...) or an :class:`ElementwiseRNN` class.
        input_size: ``D``. hidden_size: the top layer's ``N`` (the width of ``y``).
        learning: ``"rtrl"`` or ``"bptt"``. bottom_size: the bottom layer's width (default ``hidden_size``).
        kwargs: passed to both layers (e.g. ``forget_bias``).
    """

    learning_rules = ("rtrl", "bptt")

    def __init__(self, layer, input_size: int, hidden_size: int, learning: str = "rtrl",
                 bottom_size: Optional[int] = None, **kwargs) -> None:
        super().__init__()
        if learning not in self.learning_rules:
            raise ValueError(f"learning must be one of {self.learning_rules}, got {learning!r}")
        if isinstance(layer, str):
            if layer not in MODULES:
                raise ValueError(f"unknown layer {layer!r}; choose one of {tuple(MODULES)}")
            layer = MODULES[layer]
        self.learning = learning
        self.bottom = layer(input_size, bottom_size or hidden_size, learning="bptt", **kwargs)
        self.top = layer(self.bottom.hidden_size, hidden_size, learning=learning, **kwargs)
        self.input_size, self.hidden_size = input_size, self.top.hidden_size
        self.state_size = self.bottom.state_size + self.top.state_size

    def initial_state(self, batch_size: int, sensitivities: Optional[bool] = None, device=None,
                      dtype=None) -> RecurrentState:
        """Zero state ``[c_bottom; c_top]``, with the top layer's zero sensitivities when learning by RTRL."""
        low = self.bottom.initial_state(batch_size, False, device, dtype)
        high = self.top.initial_state(batch_size, sensitivities, device, dtype)
        return RecurrentState(torch.cat((low.c, high.c), -1), high.sensitivities)

    def forward(self, x: Tensor, state: Optional[RecurrentState] = None, reset: Optional[Tensor] = None
                ) -> tuple[Tensor, RecurrentState]:
        """``x (T, B, D)``, ``state`` for ``B`` streams (zero if ``None``), ``reset (T, B)`` bool.

        Returns ``y (T, B, hidden_size)`` and the state after the segment."""
        if state is None:
            state = self.initial_state(x.shape[1] if x.dim() == 3 else 1, device=x.device, dtype=x.dtype)
        if not isinstance(state, RecurrentState):
            raise TypeError(f"state must be a RecurrentState (from TwoLayer.initial_state), got {type(state).__name__}")
        if state.c.dim() != 2 or state.c.shape[-1] != self.state_size:
            raise ValueError(f"state.c has shape {tuple(state.c.shape)} but TwoLayer needs (B, {self.state_size}): "
                             f"[c_bottom ({self.bottom.state_size}); c_top ({self.top.state_size})]")
        c_low, c_high = state.c.split((self.bottom.state_size, self.top.state_size), -1)
        if self.learning == "rtrl":
            c_low = c_low.detach()  # the bottom layer learns within the segment only
        h, low = self.bottom(x, RecurrentState(c_low), reset)
        y, high = self.top(h, RecurrentState(c_high, state.sensitivities), reset)
        c = torch.cat((low.c, high.c), -1)
        return y, RecurrentState(c.detach() if self.learning == "rtrl" else c, high.sensitivities)
