"""What SGLang 0.5.23's FLA Triton code needs to run on CPU tensors under ``TRITON_INTERPRET=1``,
beyond ``tests/support/triton_interpreter.py`` (test support only; nothing here touches deltainv).

1. SGLang's ``input_guard`` enters ``torch.<device>.device(index)``; ``torch.cpu`` has no
   ``device`` in torch 2.14, so a no-op one is provided.
2. SGLang's ``fla/op.py`` binds ``exp = tl.exp`` (and friends) at import. The interpreter patches
   the attributes of ``triton.language`` while a kernel runs, not such copies, so a kernel calling
   ``exp(...)`` fails ("Did you forget to add @triton.jit?"). Module globals that are
   ``triton.language`` builtins are rebound to forwarders that look the builtin up at call time.
"""

from __future__ import annotations

import contextlib
import functools
import sys

import torch


def _forward(pkg, name, *args, **kwargs):
    return getattr(pkg, name)(*args, **kwargs)


def prepare() -> None:
    if not hasattr(torch.cpu, "device"):
        torch.cpu.device = lambda index=None: contextlib.nullcontext()


def fix_aliases(prefix: str = "sglang.kernels.ops.attention.fla") -> int:
    """Rebind aliased triton.language builtins in the already-imported modules under ``prefix``."""
    import triton.language as tl

    builtins = {}
    for pkg in (tl, tl.math):
        for name in dir(pkg):
            member = getattr(pkg, name)
            if tl.core.is_builtin(member):
                builtins.setdefault(id(member), (pkg, name))
    changed = 0
    for modname, module in list(sys.modules.items()):
        if module is None or not modname.startswith(prefix):
            continue
        for name, value in list(vars(module).items()):
            if id(value) in builtins and callable(value):
                vars(module)[name] = functools.partial(_forward, *builtins[id(value)])
                changed += 1
    return changed
