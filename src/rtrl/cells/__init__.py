"""Element-wise recurrent cells: each knows only its own step and local derivatives."""

from rtrl.cells.base import ElementwiseCell
from rtrl.cells.diagonal import DiagonalLinearCell
from rtrl.cells.elstm import ELSTMCell
from rtrl.cells.lru import LRUCell
from rtrl.cells.rtu import RTUCell

__all__ = ["ElementwiseCell", "ELSTMCell", "DiagonalLinearCell", "LRUCell", "RTUCell"]
