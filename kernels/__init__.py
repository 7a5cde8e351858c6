"""Triangular-inversion methods for delta-rule linear attention.

- :data:`METHODS`: the registry (name -> :class:`~deltainv.kernels.registry.Method`).
- :data:`PRECISIONS`: the precision vocabulary (``fp32``, ``tf32``, ``tf32x3``, ``fp16``, ``bf16``).
- :func:`invert`: ``(I + A)^-1`` for a batch ``[..., C, C]``.
- :func:`solve_tril`: the same in the engines' ``[B, T, H, BT]`` layout with varlen support.
- :func:`resolve`: a request (method, precision, options) validated once into a :class:`Recipe`.
- :mod:`~deltainv.kernels.backend`: which backend runs a recipe on a device.
- :mod:`~deltainv.kernels.chunking`: the chunking helpers the GDN / KDA / DPLR references share.
"""

from __future__ import annotations

from .backend import triton_available
from .precision import PRECISIONS
from .registry import CHUNK_SIZES, DEFAULT_METHOD, DEFAULT_PRECISION, METHODS, Method, Recipe, get_method, resolve
from .tril import invert, solve_tril


__all__ = [
    "CHUNK_SIZES",
    "DEFAULT_METHOD",
    "DEFAULT_PRECISION",
    "METHODS",
    "PRECISIONS",
    "Method",
    "Recipe",
    "get_method",
    "invert",
    "resolve",
    "solve_tril",
    "triton_available",
]
