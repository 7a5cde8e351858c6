"""Per-call safety around a deltainv drop-in: unsupported calls go to the engine's function, and a
non-finite inverse is recomputed with a stable method.

A non-finite result is recomputed by a path that shares as little as possible with the one that
failed: the guard's stable method in fp32 on the PyTorch backend (not the Triton kernel, not the
user's method or precision), and, if that is still not finite although every input is, the
engine's own function. The log says which: whether the inputs were finite (naming those that
were not), and which recompute gave the result.

The guard's cost (documented in ``docs/plugin.md``): one fp32-accumulated ``sum`` over the checked
tensor (any NaN or inf makes the sum non-finite; a single-pass reduction, about 6x cheaper than
``isfinite().all()`` on CPU) and one device-to-host read of its finiteness. On CPU that read is free; on CUDA it
is a stream synchronisation per patched call (once per GDN layer per prefill batch). It cannot be
avoided without giving up "recompute that call": the recompute decision has to be taken on the
host before the engine uses the result, and the only sync-free alternative, computing the stable
inverse every time and selecting with ``torch.where``, costs a second inversion on every call.
While a CUDA graph is being captured a sync is illegal, so captured calls are not checked (they
are counted as ``guard_skipped_capture``). ``DELTAINV_GUARD=0`` removes the check entirely.
"""

from __future__ import annotations

import inspect
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

from .log import info_once, logger, warning_once

#: target key -> counter name -> count.
COUNTERS: dict[str, Counter] = {}
_lock = threading.Lock()


def count(key: str, name: str, n: int = 1) -> None:
    with _lock:
        COUNTERS.setdefault(key, Counter())[name] += n


def _capturing(t: torch.Tensor) -> bool:
    return t.is_cuda and torch.cuda.is_current_stream_capturing()


def all_finite(t: torch.Tensor) -> bool:
    """Whether ``t`` holds no NaN/inf: the finiteness of its fp32-accumulated sum (one reduction, one
    host read). A finite tensor whose sum overflows fp32 (|sum| > 3.4e38) reads as non-finite; the
    guard then recomputes a call it did not need to, which costs time, never correctness."""
    return bool(torch.isfinite(torch.sum(t, dtype=torch.float32)))


def nonfinite_inputs(fn: Callable[..., Any], args: tuple, kwargs: dict) -> list[str]:
    """``"name (n values)"`` for every floating tensor argument of a call to ``fn`` that holds NaN/inf.

    Runs only after a non-finite result (it reads every input once), so its cost is off the hot path.
    """
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        bound = {f"argument {i}": a for i, a in enumerate(args)} | kwargs
    bad = []
    for name, value in bound.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            n = int((~torch.isfinite(value)).sum())
            if n:
                bad.append(f"{name} ({n} values)")
    return bad


def guarded(
    key: str,
    fast: Callable[..., Any],
    stable: Callable[..., Any] | None,
    pick: Callable[[Any], torch.Tensor],
    preserve: Callable[..., Callable[[], None]] | None = None,
    describe: str = "",
    engine: Callable[..., Any] | None = None,
) -> Callable[..., Any]:
    """Wrap ``fast`` so that a non-finite ``pick(result)`` is recomputed with ``stable``.

    Args:
        key: the target (``module.attr``) the counters and log lines are filed under.
        fast: the drop-in with the user's method. stable: the same drop-in with the guard's
            stable method in fp32 on the PyTorch backend, or None to disable the guard.
        pick: selects the tensor to check from the result (the inverse, or the output it feeds).
        preserve: for drop-ins that write into their arguments (a state pool): called with the
            call's arguments before ``fast`` runs, returns a function that restores them, so each
            recompute starts from the same inputs.
        engine: the engine's own function, the last resort when the stable recompute is still
            not finite although the inputs are (counted as ``guard_engine_fallback``).
    """
    if stable is None:
        return fast

    def call(*args, **kwargs):
        restore = preserve(*args, **kwargs) if preserve is not None else None
        out = fast(*args, **kwargs)
        checked = pick(out)
        if _capturing(checked):
            count(key, "guard_skipped_capture")
            return out
        if all_finite(checked):  # the one host read the guard costs
            count(key, "guard_checked")
            return out
        count(key, "guard_checked")
        count(key, "guard_recomputed")
        nbad = int((~torch.isfinite(checked)).sum())
        if restore is not None:
            restore()
        bad_inputs = nonfinite_inputs(fast, args, kwargs)
        inputs = (f"non-finite inputs: {', '.join(bad_inputs)}" if bad_inputs else "all inputs finite")
        warning_once(
            f"guard:{key}:{bool(bad_inputs)}",
            f"non-finite result in {key} ({nbad} values, {describe}; {inputs}); recomputed this call with the "
            "guard's stable method on the PyTorch backend (counted in deltainv.plugin.status(); logged once per "
            "function and kind)",
        )
        out = stable(*args, **kwargs)
        if all_finite(pick(out)):
            return out
        count(key, "guard_still_nonfinite")
        if bad_inputs:
            info_once(f"guard-input:{key}", f"{key}: still non-finite after the stable recompute; the inputs "
                      f"hold non-finite values ({', '.join(bad_inputs)}), so this is expected; returning the stable result")
            return out
        if engine is None:
            warning_once(f"guard-still:{key}", f"{key}: still non-finite after the stable recompute although all "
                         "inputs are finite; returning the stable result")
            return out
        if restore is not None:
            restore()
        count(key, "guard_engine_fallback")
        warning_once(f"guard-engine:{key}", f"{key}: still non-finite after the stable recompute although all "
                     "inputs are finite; this call runs the engine's own function")
        return engine(*args, **kwargs)

    return call


def snapshot_counters() -> dict[str, dict[str, int]]:
    with _lock:
        return {k: dict(v) for k, v in COUNTERS.items()}


def reset_counters() -> None:
    with _lock:
        COUNTERS.clear()


__all__ = ["COUNTERS", "count", "guarded", "nonfinite_inputs", "reset_counters", "snapshot_counters", "logger"]
