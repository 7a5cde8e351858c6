"""Drop-ins with the exact signatures and return contracts of the engines' functions.

Each factory takes deltainv's choices (method, precision, backend) and returns a function that
an engine can call exactly as it calls its own, so engine glue only rebinds names. The factories
know the *contracts* (argument names, layouts, gate units, output dtypes), nothing about how an
engine is patched.

========================================  ===========================================================
factory                                   replaces
========================================  ===========================================================
:func:`solve_tril`                        ``fla.ops.utils.solve_tril`` (fla 0.6.0) and vLLM's vendored
                                          ``.../flash_linear_attention/ops/solve_tril.solve_tril``
:func:`gdn_fwd_intra` (``gate_log2=True``)  fla 0.6.0 ``chunk_gated_delta_rule_fwd_intra`` (g in log2)
:func:`gdn_fwd_intra` (``gate_log2=False``) SGLang 0.5.23 ``chunk_gated_delta_rule_fwd_intra`` (g in ln)
========================================  ===========================================================
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from .registry import DEFAULT_METHOD, DEFAULT_PRECISION, get_method


def _checked(method: str | None, precision: str | None, options: dict[str, Any]) -> tuple[str, str, dict]:
    spec = get_method(DEFAULT_METHOD if method is None else method)
    precision = spec.check_precision(DEFAULT_PRECISION if precision is None else precision)
    return spec.name, precision, spec.check_options(options)


def solve_tril(
    method: str | None = None,
    precision: str | None = None,
    *,
    backend: str = "auto",
    **options: Any,
) -> Callable[..., torch.Tensor]:
    """``solve_tril(A, cu_seqlens=None, chunk_indices=None, output_dtype=torch.float)`` with deltainv's method.

    Same contract as fla / vLLM: ``A`` ``[B, T, H, BT]`` strictly lower per chunk, returns
    ``(I + A)^-1`` in ``output_dtype`` (``None``: ``A.dtype``).
    """
    name, precision, opts = _checked(method, precision, options)
    from .tril.layout import solve_tril as _solve_tril

    def solve_tril(A, cu_seqlens=None, chunk_indices=None, output_dtype=torch.float):
        return _solve_tril(A, cu_seqlens, chunk_indices, output_dtype, method=name, precision=precision,
                           backend=backend, **opts)

    solve_tril.deltainv = {"method": name, "precision": precision, "backend": backend, **opts}
    return solve_tril


def gdn_fwd_intra(
    method: str | None = None,
    precision: str | None = None,
    *,
    gate_log2: bool,
    backend: str = "auto",
    wu_precision: str | None = None,
    **options: Any,
) -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``chunk_gated_delta_rule_fwd_intra(k, v, g=None, beta=None, cu_seqlens=None, chunk_size=64, chunk_indices=None)``.

    Returns ``(w, u, A)`` as fla 0.6.0 (``gate_log2=True``) and SGLang 0.5.23 (``gate_log2=False``)
    do: ``w`` ``[B, T, HV, K]``, ``u`` ``[B, T, HV, V]``, ``A = (I + A)^-1`` ``[B, T, HV, BT]``, all in
    the input dtypes. ``g`` is the in-chunk cumulative gate.
    """
    name, precision, opts = _checked(method, precision, options)
    from .gdn.pytorch import chunk_gated_delta_rule_fwd_intra as _torch_intra

    def chunk_gated_delta_rule_fwd_intra(k, v, g=None, beta=None, cu_seqlens=None, chunk_size=64, chunk_indices=None):
        impl = _torch_intra
        if backend != "torch" and k.is_cuda:
            from .tril.invert import resolve_backend

            if resolve_backend(backend, k.device) == "triton":
                from .gdn.triton import chunk_gated_delta_rule_fwd_intra as impl  # noqa: F811
        return impl(k, v, g, beta, cu_seqlens, chunk_size, chunk_indices, gate_log2=gate_log2, method=name,
                    precision=precision, wu_precision=wu_precision, **opts)

    chunk_gated_delta_rule_fwd_intra.deltainv = {
        "method": name, "precision": precision, "backend": backend, "gate_log2": gate_log2,
        "wu_precision": wu_precision, **opts,
    }
    return chunk_gated_delta_rule_fwd_intra


fla_gdn_fwd_intra = functools.partial(gdn_fwd_intra, gate_log2=True)
sglang_gdn_fwd_intra = functools.partial(gdn_fwd_intra, gate_log2=False)

__all__ = ["fla_gdn_fwd_intra", "gdn_fwd_intra", "sglang_gdn_fwd_intra", "solve_tril"]
