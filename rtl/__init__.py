"""Amaranth generators of the N:M sparse MAC array (imported as ``hwprune.rtl``)."""

from hwprune.rtl.array import SystolicArray
from hwprune.rtl.controller import Controller
from hwprune.rtl.pe import PE
from hwprune.rtl.top import SparseArrayTop

__all__ = ["PE", "SystolicArray", "Controller", "SparseArrayTop"]
