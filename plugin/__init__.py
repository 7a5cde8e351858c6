"""Engine hooks: vLLM, SGLang, transformers and fla run deltainv's inversion when ``DELTAINV_METHOD`` is set.

Public API (the contract ``deltainv serve``, ``deltainv doctor`` and ``deploy/`` use):

- :func:`install` ``(settings=None)``: activate in this process, lazily and idempotently; returns
  :func:`status`. The engines' entry points (``vllm.general_plugins``, ``sglang.srt.plugins``)
  call it in every process; transformers/fla users call it themselves.
- :func:`status` ``()``: patched targets, method/precision, guard fallback counters.
- :func:`uninstall` ``()``: restore the engines' functions (tests).
- :func:`activate_in_process` ``(settings)``: :func:`install` for a transformers model in this
  process, blocking fla on a CPU when deltainv is off (serve's hf engine, the parity arm).
- :func:`engine_flags` ``(engine, settings=None)`` / :func:`engine_env`: what to add to an
  engine's command line / environment.
- :mod:`deltainv.plugin.settings`: the one table of variables (``VARIABLES``) and ``Settings``.

Importing this package imports no engine and patches nothing. See ``docs/plugin.md``.
"""

from __future__ import annotations

from .core import PatchError, install, status, uninstall
from .flags import engine_env, engine_flags
from .inprocess import activate_in_process, block_fla
from .settings import VARIABLES, Settings, SettingsError

__all__ = [
    "PatchError",
    "activate_in_process",
    "block_fla",
    "Settings",
    "SettingsError",
    "VARIABLES",
    "engine_env",
    "engine_flags",
    "install",
    "status",
    "uninstall",
]
