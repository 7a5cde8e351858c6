"""Which backend runs a validated request: the one place that decides it.

``invert``, the layout ``solve_tril``, the drop-ins, the plugin and ``doctor`` all ask here, with
a :class:`~deltainv.kernels.registry.Recipe` (already validated) and the device of the tensors:

- ``torch``: always PyTorch (any device).
- ``auto``: Triton when the tensors are on CUDA, Triton has an active GPU driver, this build ships
  deltainv's Triton kernels and the method has a Triton implementation; PyTorch otherwise. ``auto``
  never fails: a method without a Triton kernel simply runs in PyTorch, on the GPU if the
  tensors are there.
- ``triton``: Triton or a clear error. The method must have a Triton implementation (the error
  names the methods that do), and the kernels need a GPU with an active driver, unless
  ``TRITON_INTERPRET=1`` runs them in Triton's CPU interpreter (tests; slow).

The fused GDN and DPLR intra kernels cover the same methods as the inversion kernels, so one method set
(the registry's ``triton`` implementations) answers for both.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

from .registry import BACKENDS, METHODS, Recipe

#: What a caller may ask for.
BACKEND_CHOICES: tuple[str, ...] = ("auto", *BACKENDS)

_TRITON_MODULES = ("deltainv.kernels.tril.triton", "deltainv.kernels.gdn.triton", "deltainv.kernels.dplr.triton")


class BackendError(ValueError):
    """A backend that cannot run this method at all (the message names the methods that it runs)."""


class BackendUnavailable(RuntimeError):
    """``backend="triton"`` on a machine or tensor where Triton cannot run (the message names the
    problem and the fix)."""


def triton_methods() -> tuple[str, ...]:
    """Methods with a Triton implementation, in registry order."""
    return tuple(name for name, m in METHODS.items() if "triton" in m.impls)


def triton_interpreted() -> bool:
    """Whether ``TRITON_INTERPRET=1`` makes Triton run kernels in its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def triton_kernels_built() -> bool:
    """Whether this deltainv build ships its Triton kernels (finds the modules; imports only their
    parent packages, which are deltainv's own and import no Triton)."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in _TRITON_MODULES)
    except ImportError:
        return False


@functools.cache
def _triton_driver() -> str | None:
    """None when Triton imports and has an active GPU driver, else why not (one line)."""
    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"Triton does not import ({type(exc).__name__}: {exc})"
    try:
        from triton.runtime import driver

        driver.active.get_current_target()
    except Exception as exc:
        return f"Triton has no active GPU driver ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return None


def triton_available() -> bool:
    """Whether Triton imports and has an active GPU driver (the interpreter does not count)."""
    return _triton_driver() is None


def check_choice(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKEND_CHOICES`, else ``ValueError`` naming them."""
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {backend!r}; choose {', '.join(BACKEND_CHOICES)}")
    return backend


def check_method(recipe: Recipe, backend: str) -> str:
    """What can be said before any tensor exists: ``backend`` is a known choice and, if it is
    ``triton``, the recipe's method has a Triton implementation. Returns ``backend``."""
    check_choice(backend)
    if backend == "triton" and "triton" not in recipe.method.impls:
        raise BackendError(
            f"method {recipe.name!r} has no 'triton' implementation; methods with one: "
            f"{', '.join(triton_methods())} (or use backend='torch'/'auto', which runs {recipe.name!r} in PyTorch)"
        )
    return backend


def choose(recipe: Recipe, device: torch.device | str, backend: str = "auto") -> str:
    """The backend (``"torch"`` or ``"triton"``) that runs ``recipe`` on tensors on ``device``.

    An explicit ``triton`` raises :class:`BackendError` (a ``ValueError``) for a method without a
    Triton implementation, and :class:`BackendUnavailable` (a ``RuntimeError``) where Triton cannot
    run: no triton package, tensors off CUDA, or no GPU driver, unless ``TRITON_INTERPRET=1``.
    """
    check_method(recipe, backend)
    device = torch.device(device)
    if backend == "torch":
        return "torch"
    if backend == "auto":
        usable = (device.type == "cuda" and "triton" in recipe.method.impls and triton_kernels_built()
                  and triton_available())
        return "triton" if usable else "torch"
    if importlib.util.find_spec("triton") is None:
        raise BackendUnavailable("backend='triton' needs the triton package: pip install 'deltainv[triton]', "
                                 "or use backend='torch' (or 'auto')")
    if not triton_kernels_built():
        raise BackendUnavailable("backend='triton': this deltainv build ships no Triton kernels; use "
                                 "backend='torch' (or 'auto')")
    if triton_interpreted():
        return "triton"  # Triton's CPU interpreter runs the kernels on any device (slowly; bf16 math is inexact)
    if device.type != "cuda":
        raise BackendUnavailable(
            f"backend='triton' needs a CUDA tensor; this one is on {device.type}. Move it to a GPU, use "
            "backend='torch' (or 'auto'), or set TRITON_INTERPRET=1 before importing triton to run the kernels "
            "in Triton's CPU interpreter"
        )
    problem = _triton_driver()
    if problem is not None:
        raise BackendUnavailable(
            f"backend='triton' cannot run: {problem}. Use backend='torch' (or 'auto'), or check the CUDA "
            "driver and that Triton matches it (`deltainv doctor` shows what Triton sees)"
        )
    return "triton"


__all__ = [
    "BACKEND_CHOICES",
    "BackendError",
    "BackendUnavailable",
    "check_choice",
    "check_method",
    "choose",
    "triton_available",
    "triton_interpreted",
    "triton_kernels_built",
    "triton_methods",
]
