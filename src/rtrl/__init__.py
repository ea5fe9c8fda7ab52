"""rtrl: exact Real-Time Recurrent Learning for PyTorch.

    from rtrl.nn import ELSTM
"""

from rtrl.exact import exact_rtrl
from rtrl.state import RecurrentState, Sensitivities
from rtrl.nn import ELSTM, LRU, MODULES, RTU, DiagonalLinearRNN, ElementwiseRNN, LinearRTU

__version__ = "0.1.0"

__all__ = ["ELSTM", "DiagonalLinearRNN", "LRU", "RTU", "LinearRTU", "MODULES", "ElementwiseRNN", "RecurrentState",
           "Sensitivities", "exact_rtrl"]
