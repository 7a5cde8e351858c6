"""Register deltainv's out-of-tree transformers models (RWKV-7) the moment transformers' Auto
classes are imported, without importing transformers (or torch) from ``import deltainv``.

A meta-path finder watches two modules: when ``transformers.models.auto.configuration_auto`` has
run, ``rwkv7`` is registered with ``AutoConfig``; when ``...auto.modeling_auto`` has run, light
stand-ins for the model classes are registered with ``AutoModel`` / ``AutoModelForCausalLM``
(they import the real classes on first use). If those modules are already imported, registration
happens at once. A failure never breaks the transformers import: it warns and leaves transformers
as it was.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings

_CONFIG = "transformers.models.auto.configuration_auto"
_MODELING = "transformers.models.auto.modeling_auto"


def _run(which: str) -> None:
    try:
        from deltainv.models import rwkv7

        rwkv7.register_config() if which == _CONFIG else rwkv7.register_models()
    except Exception as exc:  # never break the user's transformers import
        warnings.warn(f"deltainv: could not register RWKV-7 with transformers ({exc!r})", RuntimeWarning, stacklevel=2)


class _Loader(importlib.abc.Loader):
    def __init__(self, inner, name: str):
        self.inner, self.name = inner, name

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        _run(self.name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in (_CONFIG, _MODELING):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader, fullname)
        return spec


def install() -> None:
    """Idempotent: register now for what is already imported, and watch for the rest."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    for name in (_CONFIG, _MODELING):
        if name in sys.modules:
            _run(name)
