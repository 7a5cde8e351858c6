"""Post-import hooks and name rebinding: patch a module when it is first imported, never before.

Importing an engine's FLA modules queries GPU 0 (device name, Triton target), and in vLLM/SGLang
worker processes the plugin runs before the worker has selected its device. So deltainv never
imports a target module itself: :func:`when_imported` runs a callback right after the module has
been executed by the normal import system (a :data:`sys.meta_path` finder wraps the real loader's
``exec_module``), or at once if the module is already in :data:`sys.modules`.

:func:`rebind` then updates ``from X import Y`` copies: every module in :data:`sys.modules` whose
global holds the old object gets the new one.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import types
from collections.abc import Callable, Iterable

Callback = Callable[[types.ModuleType], None]

_lock = threading.RLock()
_pending: dict[str, list[Callback]] = {}
_local = threading.local()


class _HookedLoader(importlib.abc.Loader):
    """Delegates to the real loader; after ``exec_module`` runs the module's pending callbacks."""

    def __init__(self, loader: importlib.abc.Loader, fullname: str) -> None:
        self._loader = loader
        self._fullname = fullname

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        # Later imports of the same module object (e.g. importlib.reload) go straight to the real loader.
        if module.__spec__ is not None and module.__spec__.loader is self:
            module.__spec__.loader = self._loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self._loader
        _run_callbacks(self._fullname, module)

    def __getattr__(self, name):  # get_source, get_filename, is_package, resource readers ...
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for watched names it asks the finders behind it and wraps the loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _pending:
            return None
        busy = getattr(_local, "busy", None)
        if busy is None:
            busy = _local.busy = set()
        if fullname in busy:
            return None
        busy.add(fullname)
        try:
            spec = None
            for finder in list(sys.meta_path):
                if finder is self or isinstance(finder, _PostImportFinder):
                    continue
                find = getattr(finder, "find_spec", None)
                if find is None:
                    continue
                spec = find(fullname, path, target)
                if spec is not None:
                    break
        finally:
            busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _HookedLoader(spec.loader, fullname)
        return spec


_finder = _PostImportFinder()


def _ensure_finder() -> None:
    if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _finder)


def _run_callbacks(fullname: str, module: types.ModuleType) -> None:
    with _lock:
        callbacks = _pending.pop(fullname, [])
    for callback in callbacks:
        callback(module)


def when_imported(fullname: str, callback: Callback) -> bool:
    """Run ``callback(module)`` once ``fullname`` is imported; at once if it already is.

    Returns True if the callback ran now. Never imports anything itself.
    """
    with _lock:
        module = sys.modules.get(fullname)
        if module is None:
            _pending.setdefault(fullname, []).append(callback)
            _ensure_finder()
            return False
    callback(module)
    return True


def pending() -> dict[str, int]:
    """Watched module names not imported yet -> number of callbacks waiting."""
    with _lock:
        return {name: len(cbs) for name, cbs in _pending.items()}


def forget(fullname: str | None = None) -> None:
    """Drop pending callbacks (all, or one module's); remove the finder when none are left."""
    with _lock:
        if fullname is None:
            _pending.clear()
        else:
            _pending.pop(fullname, None)
        if not _pending:
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PostImportFinder)]


def rebind(old: object, new: object, skip: Iterable[str] = ("deltainv",)) -> list[str]:
    """Replace every module global that *is* ``old`` with ``new``; return ``["module.name", ...]``.

    Modules whose name starts with one of ``skip`` are left alone (deltainv keeps its own
    references to the originals).
    """
    skip = tuple(skip)
    changed = []
    for modname, module in list(sys.modules.items()):
        if module is None or modname.startswith(skip):
            continue
        try:
            namespace = vars(module)
        except TypeError:
            continue
        for name, value in list(namespace.items()):
            if value is old:
                namespace[name] = new
                changed.append(f"{modname}.{name}")
    return changed


__all__ = ["forget", "pending", "rebind", "when_imported"]
