"""Engine glue: one module per engine, each ``build(settings, original, target) -> Built``.

Glue holds no math. It picks the drop-in factory from :mod:`deltainv.kernels.dropin` that has the
target's exact contract, says which calls the drop-in does not support (they go to the engine's
own function), which tensor the guard checks, and, for "route" targets, how the engine's backend
choice is steered to the path that carries deltainv's kernel.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

from deltainv.kernels.registry import CHUNK_SIZES, get_method

from ..core import Built
from ..log import logger
from ..settings import Settings

_TRITON_MODULES = ("deltainv.kernels.tril.triton", "deltainv.kernels.gdn.triton")


def triton_kernels_built() -> bool:
    """Whether this deltainv build ships its Triton kernels (finds the modules; imports only their
    parent packages, which are deltainv's own and import no Triton)."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in _TRITON_MODULES)
    except ImportError:
        return False


def inversion_backend(settings: Settings, method: str) -> str:
    """The backend an inversion drop-in gets for ``method``.

    ``auto`` resolves to Triton on CUDA inside the drop-in; deltainv hands it ``torch`` instead
    when this build has no Triton kernels or ``method`` has none (``product``, ``blocked``, ...), so
    such a method still runs on a GPU, in PyTorch. (``DELTAINV_BACKEND=triton`` with such a method is
    rejected when the settings are parsed.)
    """
    if settings.backend == "torch":
        return "torch"
    if not triton_kernels_built() or "triton" not in get_method(method).impls:
        logger.debug(f"{method}: no Triton kernel in this build; the inversion runs on the PyTorch backend")
        return "torch"
    return settings.backend


def kernel(
    factory: Callable[..., Callable[..., Any]],
    settings: Settings,
    *,
    pick: Callable[[Any], Any],
    accepts: Callable[..., str | None] | None = None,
    preserve: Callable[..., Callable[[], None]] | None = None,
    with_backend: bool = False,
    **factory_kwargs: Any,
) -> Built:
    """A kernel target's :class:`Built`: the drop-in with the user's method and the guard's stable one.

    ``with_backend``: the factory takes ``backend=`` (the inversion drop-ins); it gets
    :func:`inversion_backend` for each of the two methods.
    """
    def backend(method: str) -> dict[str, str]:
        return {"backend": inversion_backend(settings, method)} if with_backend else {}

    fast = factory(settings.method, settings.precision, **backend(settings.method), **factory_kwargs,
                   **settings.method_options)
    stable = factory(settings.guard_method, "fp32", **backend(settings.guard_method), **factory_kwargs)
    info = {k: v for k, v in getattr(fast, "deltainv", {}).items()}
    return Built(fast=fast, stable=stable, pick=pick, accepts=accepts, preserve=preserve, info=info)


def chunk_size_reason(chunk_size: int) -> str | None:
    if chunk_size not in CHUNK_SIZES:
        return f"chunk size {chunk_size} is not supported by deltainv (it supports {', '.join(map(str, CHUNK_SIZES))})"
    return None


def first(out: Any) -> Any:
    return out[0]


def last(out: Any) -> Any:
    return out[-1]


def itself(out: Any) -> Any:
    return out
