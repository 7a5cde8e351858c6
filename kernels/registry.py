"""The one registry of triangular-inversion methods.

It maps a method name to what the CLI, plugin, benchmarks and tests need to know about it:
its implementations per backend, the precisions it accepts, its options and whether it is safe
to deploy. Implementations are named as ``"module:function"`` and imported on first use, so
reading the registry never imports Triton or touches a GPU.

Every implementation has the signature ``fn(L, precision, **options) -> X`` with ``L``
``[..., C, C]`` float32 strictly lower triangular and ``X = (I + L)^-1`` float32.

A request (method, precision, options) is validated once, by :func:`resolve`, into a frozen
:class:`Recipe` that the library, the plugin, the server, benchmarks and tests pass down; nothing
below it checks names again. Each option has an :class:`OptionSpec` (type and allowed range), and
every error names the option and what it accepts.
"""

from __future__ import annotations

import importlib
import math
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
class OptionSpec:
    """One method option: its type and allowed range.

    ``kind`` is ``"precision"`` (a name from :data:`PRECISIONS` the method accepts) or ``"int"``
    (an integer in ``[low, high]``). ``None`` is always allowed and means "derived" (``default``
    explains from what).
    """

    name: str
    kind: str
    default: str
    help: str
    low: int | None = None
    high: int | None = None

    def allowed(self) -> str:
        """What the option accepts, for error messages and ``--help``."""
        if self.kind == "int":
            return f"an integer in [{self.low}, {self.high}] or None ({self.default})"
        return f"a precision ({', '.join(PRECISIONS)}) or None ({self.default})"

    def parse(self, text: str) -> Any:
        """Convert the text form (``DELTAINV_OPTIONS``, CLI) to a value :meth:`check` accepts."""
        text = text.strip()
        if text.lower() in ("", "none", "null"):
            return None
        if self.kind == "int":
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"option {self.name}={text!r} is not valid; it takes {self.allowed()}") from None
        return text

    def check(self, method: str, value: Any, precisions: tuple[str, ...]) -> Any:
        """Return ``value`` if ``method`` accepts it for this option, else raise ``ValueError``."""
        if value is None:
            return None
        if self.kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high
        else:
            ok = isinstance(value, str) and value in precisions
        if not ok:
            raise ValueError(f"option {self.name}={value!r} of method {method!r} is not valid; "
                             f"it takes {self.allowed()}")
        return value


_BASE = OptionSpec("base_precision", "precision", "default: the method's precision",
                   "precision of the 16x16 product form inside the diagonal blocks")
_REFINE = OptionSpec("refine_precision", "precision", "default: the method's precision",
                     "precision of the Newton-Schulz refinement products")
_ITERS = OptionSpec("iters", "int", "default: 12 up to C=64, 14 at C=128", "Newton-Schulz iterations",
                    low=1, high=64)


@dataclass(frozen=True, eq=False)  # one instance per name: identity equality, hashable
class Method:
    """One inversion method.

    Attributes:
        name: registry key, used verbatim by the CLI (``--tri-method``) and ``DELTAINV_METHOD``.
        summary: one line for ``--help`` and reports.
        stable: whether the method is numerically stable enough to deploy. ``product`` is not.
        precisions: the precision names the method accepts.
        options: option name -> :class:`OptionSpec`.
        impls: backend name -> ``"module:function"``.
    """

    name: str
    summary: str
    stable: bool
    precisions: tuple[str, ...]
    impls: Mapping[str, str]
    options: Mapping[str, OptionSpec] = field(default_factory=dict)

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
        """All of the method's options (``None`` where not given), each checked against its spec.

        Unknown names raise ``TypeError`` (as an unexpected keyword argument would); bad values
        raise ``ValueError`` naming the option and its range.
        """
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise TypeError(f"method {self.name!r} got unknown option(s) {unknown}; its options: {allowed}")
        return {name: spec.check(self.name, options.get(name), self.precisions)
                for name, spec in self.options.items()}


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
        impls={"torch": f"{_TORCH}:blocked", "triton": f"{_TRITON}:blocked"},
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
        options={"base_precision": _BASE},
    ),
    Method(
        name="mxr_refine",
        summary="MXR plus one Newton-Schulz step X <- X(2I - (I+A)X)",
        stable=True,
        precisions=PRECISIONS,
        impls={"torch": f"{_TORCH}:mxr_refine", "triton": f"{_TRITON}:mxr_refine"},
        options={"refine_precision": _REFINE, "base_precision": _BASE},
    ),
    Method(
        name="newton_schulz",
        summary="Newton-Schulz iteration from X0 = I/(2C); iters defaults to 12 (C<=64) or 14 (C=128)",
        stable=True,
        precisions=PRECISIONS,
        impls={"torch": f"{_TORCH}:newton_schulz"},
        options={"iters": _ITERS},
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


#: What ``method=None`` / ``precision=None`` mean everywhere (library, CLI, plugin): fp32 forward
#: substitution inside the 16x16 diagonal blocks and tf32x3 tensor-core merges. It is the one
#: recipe within 3x of fla's ieee error on every input kind at every chunk size (worst: 2.7x on
#: repeated tokens at C=128; ``blocked``/``tf32x3`` is 4.3x at C=16 and 3.5x on DPLR, ``mxr``
#: loses three digits on repeated tokens, ``mxr_refine`` fails with beta up to 2), and its merges
#: run on tensor cores. See README "Numerics" and ``bench/results/cpu-x86-64/compile_time.md``.
DEFAULT_METHOD = "substitution"
DEFAULT_PRECISION = "tf32x3"


def newton_schulz_converged_iters(chunk_size: int) -> int:
    """Iterations that converge from ``X0 = I/(2C)`` in fp32: 12 up to C = 64, 14 at 128.

    The error stalls near 1 for about ``log2(2C ln(1/u))`` steps, then squares each step.
    """
    return max(12, math.ceil(2 * math.log2(chunk_size)))


@dataclass(frozen=True)
class Recipe:
    """A validated request: the method, the precision of each stage and the typed options.

    Build it with :func:`resolve`; it is hashable (a kernel cache key) and what the library,
    plugin and server pass down instead of loose names.

    Attributes:
        method: the registry entry.
        precision: the precision of the method's products (the merges, for block methods).
        options: ``(name, value)`` pairs, every option of the method, ``None`` where derived.
    """

    method: Method
    precision: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments for the method's implementations."""
        return dict(self.options)

    @property
    def base_precision(self) -> str:
        """Precision inside the 16x16 diagonal blocks (``mxr``'s product form)."""
        return self.kwargs.get("base_precision") or self.precision

    @property
    def refine_precision(self) -> str:
        """Precision of the refinement step (``mxr_refine``)."""
        return self.kwargs.get("refine_precision") or self.precision

    def accuracy_warning(self, chunk_size: int = 64) -> str | None:
        """Why this recipe is known not to reach fp32-level accuracy at ``chunk_size``, or None.

        Such recipes are valid (the paper's study needs them) but should not be deployed silently.
        """
        if not self.method.stable:
            return f"method {self.name!r} is numerically unstable (study only)"
        iters = self.kwargs.get("iters")
        if self.name == "newton_schulz" and iters is not None and iters < newton_schulz_converged_iters(chunk_size):
            need = newton_schulz_converged_iters(chunk_size)
            return f"newton_schulz with iters={iters} does not converge at C={chunk_size} (needs {need})"
        return None

    def describe(self) -> str:
        """``method=... precision=...`` plus the options that are set, for logs and reports."""
        opts = "".join(f" {k}={v}" for k, v in self.options if v is not None)
        return f"method={self.name} precision={self.precision}{opts}"


def resolve(method: str | Recipe | None = None, precision: str | None = None, **options: Any) -> Recipe:
    """Validate a request once and return its :class:`Recipe`.

    ``method`` / ``precision`` default to :data:`DEFAULT_METHOD` / :data:`DEFAULT_PRECISION` (a method
    that does not take the default precision gets its first one). A
    :class:`Recipe` passed as ``method`` is returned as is (it was validated when built); giving
    ``precision`` or options beside it is an error. Raises ``ValueError`` for unknown names and
    out-of-range values and ``TypeError`` for unknown option names, each naming what it accepts.
    """
    if isinstance(method, Recipe):
        if precision is not None or options:
            raise TypeError("resolve() got a Recipe together with precision/options; pass one or the other")
        return method
    spec = get_method(DEFAULT_METHOD if method is None else method)
    if precision is None:  # the default, or the method's own when it takes only others (``torch``: fp32)
        precision = DEFAULT_PRECISION if DEFAULT_PRECISION in spec.precisions else spec.precisions[0]
    precision = spec.check_precision(precision)
    return Recipe(spec, precision, tuple(spec.check_options(options).items()))
