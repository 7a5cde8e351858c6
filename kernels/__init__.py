"""Triangular-inversion methods for delta-rule linear attention.

- :data:`METHODS`: the registry (name -> :class:`~deltainv.kernels.registry.Method`).
- :data:`PRECISIONS`: the precision vocabulary (``fp32``, ``tf32``, ``tf32x3``, ``fp16``, ``bf16``).
- :func:`invert`: ``(I + A)^-1`` for a batch ``[..., C, C]``.
- :func:`solve_tril`: the same in the engines' ``[B, T, H, BT]`` layout with varlen support.
"""

from __future__ import annotations

import functools

from .precision import PRECISIONS
from .registry import CHUNK_SIZES, DEFAULT_METHOD, DEFAULT_PRECISION, METHODS, Method, get_method
from .tril import invert, solve_tril


@functools.cache
def triton_available() -> bool:
    """Whether Triton imports and has an active GPU driver (the interpreter does not count)."""
    try:
        import triton  # noqa: F401
        from triton.runtime import driver

        driver.active.get_current_target()
    except Exception:
        return False
    return True


__all__ = [
    "CHUNK_SIZES",
    "DEFAULT_METHOD",
    "DEFAULT_PRECISION",
    "METHODS",
    "PRECISIONS",
    "Method",
    "get_method",
    "invert",
    "solve_tril",
    "triton_available",
]
