"""The one registry of triangular-inversion methods.

It maps a method name to what the CLI, plugin, benchmarks and tests need to know about it:
its implementations per backend, the precisions it accepts, its options and whether it is safe
to deploy. Implementations are named as ``"module:function"`` and imported on first use, so
reading the registry never imports Triton or touches a GPU.

Every implementation has the signature ``fn(L, precision, **options) -> X`` with ``L``
``[..., C, C]`` float32 strictly lower triangular and ``X = (I + L)^-1`` float32.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .precision import PRECISIONS, check_precision

#: Chunk sizes every method supports (powers of two; the 16x16 base block divides them all).
CHUNK_SIZES: tuple[int, ...] = (16, 32, 64, 128)

#: Backends an implementation can be registered for; ``auto`` resolves to one of them.
BACKENDS: tuple[str, ...] = ("torch", "triton")


@dataclass(frozen=True)
class Method:
    """One inversion method.

    Attributes:
        name: registry key, used verbatim by the CLI (``--tri-method``) and ``DELTAINV_METHOD``.
        summary: one line for ``--help`` and reports.
        stable: whether the method is numerically stable enough to deploy. ``product`` is not.
        precisions: the precision names the method accepts.
        options: method-specific keyword options and their defaults.
        impls: backend name -> ``"module:function"``.
    """

    name: str
    summary: str
    stable: bool
    precisions: tuple[str, ...]
    impls: Mapping[str, str]
    options: Mapping[str, Any] = field(default_factory=dict)

    def implementation(self, backend: str) -> Callable[..., Any]:
        """Import and return the implementation for ``backend`` (``torch`` or ``triton``)."""
        if backend not in self.impls:
            have = ", ".join(sorted(self.impls)) or "none"
            raise ValueError(f"method {self.name!r} has no {backend!r} implementation (available: {have})")
        module, _, attr = self.impls[backend].partition(":")
        return getattr(importlib.import_module(module), attr)

    def check_precision(self, precision: str) -> str:
        check_precision(precision)
        if precision not in self.precisions:
            raise ValueError(
                f"method {self.name!r} does not take precision {precision!r}; "
                f"it takes {', '.join(self.precisions)}"
            )
        return precision

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise TypeError(f"method {self.name!r} got unknown option(s) {unknown}; its options: {allowed}")
        return {**self.options, **options}


_TORCH = "deltainv.kernels.tril.pytorch"
_TRITON = "deltainv.kernels.tril.triton"

_METHODS = (
    Method(
        name="substitution",
        summary="forward substitution on 16x16 diagonal blocks, then block merges (fla's solve_tril)",
        stable=True,
        precisions=PRECISIONS,
        impls={"torch": f"{_TORCH}:substitution", "triton": f"{_TRITON}:substitution"},
    ),
    Method(
        name="blocked",
        summary="recursive block inversion doubling from 1x1 blocks (MBH)",
        stable=True,
        precisions=PRECISIONS,
        impls={"torch": f"{_TORCH}:blocked"},
    ),
    Method(
        name="product",
        summary="product form (I-L)(I+L^2)(I+L^4)... over the whole chunk (MCH); UNSTABLE, for study only",
        stable=False,
        precisions=PRECISIONS,
        impls={"torch": f"{_TORCH}:product"},
    ),
    Method(
        name="mxr",
        summary="product form inside 16x16 diagonal blocks, then block doubling 16->C (the paper's MXR)",
        stable=True,
        precisions=PRECISIONS,
        impls={"torch": f"{_TORCH}:mxr", "triton": f"{_TRITON}:mxr"},
        options={"base_precision": None},
    ),
    Method(
        name="mxr_refine",
        summary="MXR plus one Newton-Schulz step X <- X(2I - (I+A)X)",
        stable=True,
        precisions=PRECISIONS,
        impls={"torch": f"{_TORCH}:mxr_refine", "triton": f"{_TRITON}:mxr_refine"},
        options={"refine_precision": None, "base_precision": None},
    ),
    Method(
        name="newton_schulz",
        summary="Newton-Schulz iteration from X0 = I/(2C); iters defaults to 12 (C<=64) or 14 (C=128)",
        stable=True,
        precisions=PRECISIONS,
        impls={"torch": f"{_TORCH}:newton_schulz"},
        options={"iters": None},
    ),
    Method(
        name="torch",
        summary="torch.linalg.solve_triangular in fp32, as a reference point",
        stable=True,
        precisions=("fp32",),
        impls={"torch": f"{_TORCH}:triangular_solve"},
    ),
)

#: Method name -> :class:`Method`, in presentation order.
METHODS: Mapping[str, Method] = MappingProxyType({m.name: m for m in _METHODS})


def get_method(name: str) -> Method:
    """Look up a method, raising ``ValueError`` that lists the known names."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


#: What ``method=None`` / ``precision=None`` mean everywhere (library, CLI, plugin): the
#: stable matmul-rich method, refined, with ieee products. See README "Numerics" for the
#: evidence and for cheaper pairings (e.g. ``tf32`` with ``refine_precision="tf32x3"``).
DEFAULT_METHOD = "mxr_refine"
DEFAULT_PRECISION = "fp32"
