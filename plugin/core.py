"""Activation: :func:`install`, :func:`status`, :func:`uninstall`.

``install`` reads the settings, and for every enabled target whose engine is installed checks the
engine version (metadata only) and that the target's module exists on disk, then arranges for the
target to be patched when its module is first imported (:mod:`deltainv.plugin.hooks`), or at once
if it already is. Patching checks that the attribute exists and has the expected parameters,
replaces it, and rebinds the ``from X import Y`` copies already made. Nothing is imported from an
engine by deltainv itself.

A target's ``attr`` may be dotted (``Class.method``): the method (or classmethod) is replaced on the
class. A target with role ``"enable"`` replaces an engine function that stands between the engine
and the path carrying deltainv's kernel on some platform (vLLM's CPU build and Kimi Linear), like a
route: no guard, and the replacement calls the original wherever the engine's own code can run. A target
with role ``"op"`` names an engine class the engine lets plugins replace officially (vLLM's
``CustomOp.register_oot``): its glue registers deltainv's class through the engine's API, core
replaces nothing and calls ``Built.undo`` on :func:`uninstall`.

Problems with an engine (unknown version, missing target, changed signature) keep the engine's
own function and warn once; with ``DELTAINV_STRICT=1`` they raise :class:`PatchError` (inside the
engine's import of the module, so the engine fails to start).
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import hooks
from .guard import count, guarded, reset_counters, snapshot_counters
from .log import configure, info_once, logger, reset_once, warning_once
from .settings import TARGET_GROUPS, Settings
from .targets import TARGETS, Target, format_range, installed_version, lookup, module_exists, version_supported

_MARK = "__deltainv_target__"


class PatchError(RuntimeError):
    """A target could not be patched and ``DELTAINV_STRICT=1``."""


@dataclass
class Built:
    """What an engine glue ``build`` returns for one target.

    ``fast``: the replacement (kernel targets: the drop-in with the user's method; route targets:
    the whole replacement). ``stable``: the same drop-in with the guard's stable method (kernel
    targets). ``pick``: result -> tensor the guard checks. ``accepts``: ``(*args, **kwargs) ->
    None`` or the reason this call goes to the engine's own function. ``preserve``: see
    :func:`deltainv.plugin.guard.guarded`. ``info``: what the replacement does, for status/logs.
    """

    fast: Callable[..., Any]
    stable: Callable[..., Any] | None = None
    pick: Callable[[Any], Any] | None = None
    accepts: Callable[..., str | None] | None = None
    preserve: Callable[..., Callable[[], None]] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    undo: Callable[[], None] | None = None  # "op" targets: withdraw the registration


@dataclass
class _State:
    settings: Settings | None = None
    patched: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> record
    originals: dict[str, tuple[Any, Any, Any]] = field(default_factory=dict)  # key -> (owner, original, new)
    undo: list[Callable[[], None]] = field(default_factory=list)
    waiting: dict[str, Target] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    first_call_logged: bool = False


_state = _State()
_lock = threading.RLock()


def _problem(key: str, message: str, settings: Settings) -> None:
    """An engine-compatibility problem: warn once (and remember it), or raise when strict."""
    full = f"{message}; keeping the engine's own function"
    if settings.strict:
        raise PatchError(f"deltainv (DELTAINV_STRICT=1): {message}")
    if warning_once(f"problem:{key}:{message}", full):
        _state.warnings.append(full)


def _params(fn: Any) -> tuple[str, ...] | None:
    try:
        return tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


def guarded_call(key: str, original: Callable[..., Any], built: Built, settings: Settings) -> Callable[..., Any]:
    """A kernel replacement filed under ``key``: unsupported calls go to ``original``, the others are
    counted, logged once and run through the guard. (What :func:`install` puts in place of a kernel
    target; "op" glue uses it for the kernel its class calls.)"""
    return _compose(key, "kernel", original, built, settings)


def _compose(key: str, role: str, original: Any, built: Built, settings: Settings) -> Callable[..., Any]:
    if role in ("route", "enable"):
        replacement = built.fast
    else:
        inner = guarded(key, built.fast, built.stable if settings.guard else None, built.pick, built.preserve,
                        describe=settings.describe(), engine=original)
        accepts = built.accepts

        def replacement(*args, **kwargs):
            if accepts is not None:
                reason = accepts(*args, **kwargs)
                if reason is not None:
                    count(key, "original_calls")
                    info_once(f"unsupported:{key}:{reason}", f"{key}: {reason}: calling the engine's own function")
                    return original(*args, **kwargs)
            count(key, "calls")
            if not _state.first_call_logged:
                _log_first_call(key)
            return inner(*args, **kwargs)

    functools.update_wrapper(replacement, original, assigned=("__name__", "__qualname__", "__doc__"), updated=())
    replacement.__wrapped__ = original  # inspect.signature() shows the engine's exact signature
    setattr(replacement, _MARK, key)
    return replacement


def _log_first_call(key: str) -> None:
    with _lock:
        if _state.first_call_logged:
            return
        _state.first_call_logged = True
        kernels = sorted(k for k, r in _state.patched.items() if r["role"] in ("kernel", "op"))
        routes = sorted(k for k, r in _state.patched.items() if r["role"] in ("route", "enable"))
    settings = _state.settings
    logger.info(
        f"running deltainv ({settings.describe()}, guard={'on' if settings.guard else 'off'}) from {key}; "
        f"patched functions: {', '.join(kernels)}" + (f"; routed: {', '.join(routes)}" if routes else "")
    )


def _patch(target: Target, module: types.ModuleType) -> None:
    settings = _state.settings
    key = target.key
    with _lock:
        _state.waiting.pop(key, None)
        if settings is None or key in _state.patched:
            return
        # A classmethod is replaced by a classmethod around the replacement of its function (whose
        # parameters, ``cls`` first, are what ``target.params`` lists); uninstall restores the original.
        owner, name, original, is_classmethod = lookup(module, target.attr)
        raw = inspect.getattr_static(owner, name) if is_classmethod else None
        if original is None:
            _state.skipped[key] = "attribute missing"
            _problem(key, f"{key} does not exist in this {target.dists[0]} build (engine changed)", settings)
            return
        if getattr(original, _MARK, None) == key:  # already ours (module reloaded by someone else's hook)
            return
        params = _params(target.checked(original))
        if params != target.params:
            _state.skipped[key] = f"signature changed: {params}"
            _problem(key, f"{key} has parameters {params}, deltainv expects {target.params} (engine changed)",
                     settings)
            return
        built = target.builder()(settings, original, target)
        if target.role == "op":  # registered through the engine's own API by the glue: nothing replaced
            rebound = []
            if built.undo is not None:
                _state.undo.append(built.undo)
        else:
            replacement = _compose(key, target.role, original, built, settings)
            if is_classmethod:
                installed = classmethod(replacement)
                setattr(owner, name, installed)
                rebound = []
                _state.originals[key] = (owner, raw, installed)
            else:
                setattr(owner, name, replacement)
                rebound = hooks.rebind(original, replacement)
                _state.originals[key] = (owner, original, replacement)
        engine = _state.engines.get(target.group, {})
        _state.patched[key] = {
            "target": key,
            "group": target.group,
            "role": target.role,
            "rule": target.rule,
            "engine": engine.get("dist"),
            "version": engine.get("version"),
            "rebound": rebound,
            **built.info,
        }
        logger.debug(f"patched {key} ({target.role}); rebound copies: {rebound or 'none'}")


def install(settings: Settings | None = None) -> dict[str, Any]:
    """Activate deltainv's engine hooks in this process; idempotent. Returns :func:`status`.

    ``settings`` defaults to :meth:`Settings.from_env`. With ``DELTAINV_METHOD`` unset/``off``
    nothing is patched or watched. A second call with the same settings changes nothing; with
    different settings it raises ``RuntimeError`` (call :func:`uninstall` first).
    """
    settings = Settings.from_env() if settings is None else settings
    with _lock:
        if _state.settings is not None:
            if _state.settings != settings:
                raise RuntimeError(
                    f"deltainv is already installed in this process with {_state.settings.describe()}; "
                    "call deltainv.plugin.uninstall() before installing different settings"
                )
            return status()
        if not settings.active:
            return status()
        configure(settings.log_level)
        _state.settings = settings
        inaccurate = settings.inaccuracy()
        if inaccurate:
            logger.warning(f"DELTAINV_ALLOW_INACCURATE=1: running a recipe known to be inaccurate: {inaccurate}")
        by_slot: dict[str, list[Target]] = {}
        for target in TARGETS:
            if target.group in settings.targets:
                by_slot.setdefault(target.slot, []).append(target)
        unknown: dict[str, list[Target]] = {}   # "dist version" -> targets outside their tested range
        missing: dict[str, list[str]] = {}      # "dist version" -> slots with no module on disk
        for slot, targets in by_slot.items():
            usable = []
            for target in targets:
                found = installed_version(target.dists)
                if found is None:
                    _state.skipped[target.key] = "engine not installed"
                    continue
                dist, version = found
                _state.engines.setdefault(target.group, {"dist": dist, "version": version})
                if not version_supported(version, target.versions):
                    _state.skipped[target.key] = f"{dist} {version} not in {format_range(target.versions)}"
                    unknown.setdefault(f"{dist} {version}", []).append(target)
                    continue
                usable.append(target)
            present = [t for t in usable if module_exists(t.module)]
            if usable and not present:
                for t in usable:
                    _state.skipped[t.key] = "module missing"
                engine = _state.engines[usable[0].group]
                missing.setdefault(f"{engine['dist']} {engine['version']}", []).append(
                    f"{slot} ({' or '.join(t.module for t in usable)})")
            for target in present:
                _state.waiting[target.key] = target
                hooks.when_imported(target.module, functools.partial(_patch, target))
        for engine, targets in unknown.items():
            ranges = sorted({format_range(t.versions) for t in targets})
            _problem(f"version:{engine}", f"{engine} is not a version deltainv knows (supported {', '.join(ranges)}) "
                     f"for {', '.join(t.key for t in targets)}", settings)
        for engine, slots in missing.items():
            _problem(f"missing:{engine}", f"{engine} lacks the target module(s) of: {'; '.join(slots)}", settings)
        waiting: dict[str, int] = {}
        for target in _state.waiting.values():
            engine = _state.engines[target.group]
            name = f"{engine['dist']} {engine['version']}"
            waiting[name] = waiting.get(name, 0) + 1
        logger.info(
            f"active ({settings.describe()}, guard={'on' if settings.guard else 'off'}, backend={settings.backend}); "
            f"patched now: {', '.join(sorted(_state.patched)) or 'none'}; patched on first import: "
            + (", ".join(f"{n} ({c} functions)" for n, c in sorted(waiting.items())) or "none")
        )
        return status()


def uninstall() -> None:
    """Restore every patched function (and rebound copy), stop watching imports, reset counters."""
    with _lock:
        for key, (owner, original, replacement) in _state.originals.items():
            name = key.rsplit(".", 1)[1]
            current = inspect.getattr_static(owner, name, None) if isinstance(owner, type) else getattr(owner, name, None)
            if current is replacement:
                setattr(owner, name, original)
            if not isinstance(replacement, classmethod):
                hooks.rebind(replacement, original)
        for undo in _state.undo:
            undo()
        for target in list(_state.waiting.values()):
            hooks.forget(target.module)
        hooks.forget()
        _state.__init__()
        reset_counters()
        reset_once()


def status() -> dict[str, Any]:
    """What deltainv did in this process: settings, patched targets, waiting targets, counters.

    Read by ``deltainv serve``'s ``/metrics`` and by ``deltainv doctor``. ``guard_fallbacks`` is the
    number of calls the guard recomputed with the stable method.
    """
    with _lock:
        settings = _state.settings
        counters = snapshot_counters()
        return {
            "active": settings is not None,
            "pid": os.getpid(),
            "method": settings.method if settings else None,
            "precision": settings.precision if settings else None,
            "options": dict(settings.options) if settings else {},
            "guard": settings.guard if settings else None,
            "backend": settings.backend if settings else None,
            "strict": settings.strict if settings else None,
            "targets": sorted(settings.targets) if settings else [],
            "engines": {g: dict(v) for g, v in _state.engines.items()},
            "patched": [dict(r) for _, r in sorted(_state.patched.items())],
            "waiting": sorted(_state.waiting),
            "skipped": dict(sorted(_state.skipped.items())),
            "warnings": list(_state.warnings),
            "counters": counters,
            "guard_fallbacks": sum(c.get("guard_recomputed", 0) for c in counters.values()),
        }


__all__ = ["Built", "PatchError", "TARGET_GROUPS", "guarded_call", "install", "status", "uninstall"]
