"""Activating deltainv inside the current process, for transformers models run in it.

The embedded server (``deltainv serve --engine hf``), the parity gate's in-process arm and
``deltainv.eval.lmeval_offline`` all build a transformers model in their own process. On a machine
without CUDA, transformers must not bind fla's Triton kernels (importing fla works there, calling
its kernels fails with Triton's "0 active drivers"), unless deltainv is active and replaces them.
:func:`activate_in_process` is the one place that decides; callers pass validated
:class:`~deltainv.plugin.settings.Settings`, never environment variables.
"""

from __future__ import annotations

import sys
from typing import Any

from .settings import Settings


def block_fla() -> None:
    """Make ``import fla`` fail, so transformers takes its pure-PyTorch kernels.

    Must run before transformers imports fla; raises ``RuntimeError`` if fla is already imported.
    """
    if sys.modules.get("fla") is not None:
        raise RuntimeError("fla was imported before it could be blocked; transformers may already bind it")
    sys.modules["fla"] = None


def activate_in_process(settings: Settings) -> dict[str, Any]:
    """Prepare this process for an in-process transformers model and activate ``settings``.

    Without CUDA and with deltainv off, fla is blocked (the engine's own kernel is then
    transformers' PyTorch path); with deltainv active, fla stays importable because deltainv
    patches the fla functions transformers binds. Returns :func:`deltainv.plugin.status`.
    """
    import torch

    from .core import install

    if not torch.cuda.is_available() and not settings.active:
        block_fla()
    return install(settings)


__all__ = ["activate_in_process", "block_fla"]
