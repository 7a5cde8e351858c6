"""Triangular inversion ``(I + A)^-1``: PyTorch reference methods, ``invert`` and ``solve_tril``."""

from .invert import invert
from .layout import solve_tril

__all__ = ["invert", "solve_tril"]
