"""Amaranth generators of the N:M sparse MAC array (imported as ``hwprune.rtl``)."""

from .array import SystolicArray
from .controller import Controller
from .pe import PE
from .top import SparseArrayTop

__all__ = ["PE", "SystolicArray", "Controller", "SparseArrayTop"]
