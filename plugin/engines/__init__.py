"""Engine glue: one module per engine, each ``build(settings, original, target) -> Built``.

Glue holds no math. It picks the drop-in factory from :mod:`deltainv.kernels.dropin` that has the
target's exact contract, says which calls the drop-in does not support (they go to the engine's
own function), which tensor the guard checks, and, for "route" targets, how the engine's backend
choice is steered to the path that carries deltainv's kernel.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from deltainv.kernels.registry import CHUNK_SIZES

from ..core import Built
from ..settings import Settings


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

    ``with_backend``: the factory takes ``backend=`` (the inversion drop-ins). The fast drop-in gets
    ``DELTAINV_BACKEND`` as is, and :mod:`deltainv.kernels.backend` decides per call (``auto``: Triton
    on CUDA for methods with a Triton kernel, PyTorch otherwise, also on a GPU). The guard's stable
    drop-in always runs on the PyTorch backend, so its recompute does not go through the kernel
    that failed.
    """
    if "wu_precision" in inspect.signature(factory).parameters:  # the intra drop-ins (W/U products)
        factory_kwargs.setdefault("wu_precision", None if settings.wu_precision == "auto" else settings.wu_precision)
    fast = factory(settings.method, settings.precision, **({"backend": settings.backend} if with_backend else {}),
                   **factory_kwargs, **settings.method_options)
    stable = factory(settings.guard_method, "fp32", **({"backend": "torch"} if with_backend else {}), **factory_kwargs)
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
