"""transformers 5.19-5.23: the chunked gated-delta-rule functions of ``qwen3_next``, ``qwen3_5``,
``qwen3_5_moe`` and ``kimi_linear``.

transformers binds fla's Triton kernels at import time with no device check, so with fla installed
these models fail on the CPU (``0 active drivers``). When deltainv is active:

- chunk function: off CUDA, deltainv's PyTorch chunked GDN/KDA with the chosen method; on CUDA,
  the bound implementation (fla's kernel, whose inversion deltainv's fla target patches), or
  deltainv's PyTorch path when transformers fell back to its own torch function;
- recurrent (decode) function: off CUDA, transformers' own torch recurrence instead of fla's
  Triton kernel (deltainv has no inversion to add there); on CUDA unchanged.
"""

from __future__ import annotations

import inspect

from deltainv.kernels import dropin

from ..core import Built
from . import chunk_size_reason, first, kernel


def bound_to_package(fn) -> bool | None:
    """Whether transformers bound ``fn`` (a ``use_kernel_func_from_hub_with_fallback`` wrapper) to the
    original package (fla) rather than its torch function; None if that cannot be read."""
    seen = 0
    while fn is not None and seen < 8:
        code, closure = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
        if code is not None and closure:
            cells = dict(zip(code.co_freevars, closure))
            if "implementation" in cells and "torch_function" in cells:
                return cells["implementation"].cell_contents is not cells["torch_function"].cell_contents
        fn = getattr(fn, "__wrapped__", None)
        seen += 1
    return None


def _chunk(factory, settings, original):
    on_package = bound_to_package(original)

    def accepts(query, key, value, g, beta, chunk_size=64, initial_state=None, output_final_state=False,
                use_qk_l2norm_in_kernel=False, **kwargs):
        if query.is_cuda and on_package is not False:
            return "CUDA tensors with fla bound: fla's kernel runs (deltainv's fla target patches its inversion)"
        if kwargs.get("cu_seqlens") is not None and query.shape[0] != 1:
            return "packed sequences (cu_seqlens) need batch size 1"
        return chunk_size_reason(chunk_size)

    built = kernel(factory, settings, pick=first, accepts=accepts)
    built.info["bound_to_fla"] = on_package
    return built


def chunk_gdn(settings, original, target):
    return _chunk(dropin.transformers_gdn, settings, original)


def chunk_kda(settings, original, target):
    return _chunk(dropin.transformers_kda, settings, original)


def recurrent(settings, original, target):
    reference = inspect.unwrap(original)
    on_package = bound_to_package(original)

    def recurrent_rule(*args, **kwargs):
        query = args[0] if args else kwargs["query"]
        if query.is_cuda or kwargs.get("cu_seqlens") is not None or on_package is False:
            return original(*args, **kwargs)
        return reference(*args, **kwargs)

    return Built(fast=recurrent_rule, info={"does": "off CUDA: transformers' torch recurrence",
                                            "bound_to_fla": on_package})
