"""Drop-ins with the exact signatures and return contracts of the engines' functions.

Each factory takes deltainv's choices (method, precision, backend) and returns a function that
an engine can call exactly as it calls its own, so engine glue only rebinds names. The factories
know the *contracts* (argument names, layouts, gate units, output dtypes), nothing about how an
engine is patched.

==========================================  ===========================================================
factory                                     replaces
==========================================  ===========================================================
:func:`solve_tril`                          ``fla.ops.utils.solve_tril`` (fla 0.6.0) and vLLM's vendored
                                            ``.../flash_linear_attention/ops/solve_tril.solve_tril``
:func:`gdn_fwd_intra` (``gate_log2=True``)  fla 0.6.0 ``chunk_gated_delta_rule_fwd_intra`` (g in log2)
:func:`gdn_fwd_intra` (``gate_log2=False``) SGLang 0.5.23 ``chunk_gated_delta_rule_fwd_intra`` (g in ln)
:func:`dplr_fwd_intra`                      fla 0.6.0 ``chunk_dplr_fwd_intra`` followed by ``prepare_wy_repr_fwd``
                                            (the DPLR / RWKV-7 intra + WY step, one call; gates in log2)
:func:`vllm_cpu_gdn`                        vLLM CPU build 0.32/0.33 ``vllm._custom_ops.chunk_gated_delta_rule_cpu``
                                            (the whole GDN prefill core, state pool updated in place)
:func:`transformers_gdn`                    transformers 5.19-5.23 ``torch_chunk_gated_delta_rule``
                                            (``qwen3_next``, ``qwen3_5``, ``qwen3_5_moe``)
:func:`transformers_kda`                    transformers 5.19-5.23 ``chunk_kimi_delta_attention`` (``kimi_linear``)
:func:`vllm_kda_fused_gate`                 vLLM 0.32/0.33 ``...kimi_k3.{nvidia,amd}.ops.third_party.kda
                                            .chunk_kda_with_fused_gate`` (Kimi Linear prefill, CPU builds)
:func:`vllm_kda_packed_decode`              vLLM 0.32/0.33 ``...kda.fused_recurrent_kda_packed_decode``
                                            (Kimi Linear decode step, CPU builds; no inversion)
:func:`kda_fwd_intra` (``contract="fla"``)  fla 0.6.0 ``fla.ops.kda.chunk_intra.chunk_kda_fwd_intra`` (g in log2)
:func:`kda_fwd_intra` (``"sglang"``)        SGLang 0.5.23 ``...attention.fla.chunk_intra.chunk_kda_fwd_intra`` (log2)
:func:`kda_fwd_intra` (``"vllm"``)          vLLM 0.32/0.33 ``vllm.models.kimi_k3.{nvidia,amd}.ops.third_party.kda
                                            .chunk_intra.chunk_kda_fwd_intra`` (log2; returns ``(Aqk, Akk)``)
==========================================  ===========================================================

The first three, the KDA intra drop-ins and :func:`dplr_fwd_intra` run deltainv's inversion inside
the engine's own pipeline (Triton on CUDA when available). The vLLM CPU and transformers drop-ins
replace a whole chunked forward with deltainv's PyTorch one (:mod:`deltainv.kernels.gdn.pytorch`, :mod:`deltainv.kernels.kda.pytorch`), for engines whose own
kernel there has no separate inversion step (a C++ kernel, ``torch.linalg.solve_triangular``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from . import backend as backends
from .precision import check_precision
from .registry import Recipe, resolve


def _info(recipe: Recipe, backend: str, **extra: Any) -> dict[str, Any]:
    """What a drop-in runs, for ``deltainv.plugin.status()`` and logs (the ``.deltainv`` attribute)."""
    return {"method": recipe.name, "precision": recipe.precision, "backend": backend, **extra, **recipe.kwargs}


def solve_tril(
    method: str | Recipe | None = None,
    precision: str | None = None,
    *,
    backend: str = "auto",
    **options: Any,
) -> Callable[..., torch.Tensor]:
    """``solve_tril(A, cu_seqlens=None, chunk_indices=None, output_dtype=torch.float)`` with deltainv's method.

    Same contract as fla / vLLM: ``A`` ``[B, T, H, BT]`` strictly lower per chunk, returns
    ``(I + A)^-1`` in ``output_dtype`` (``None``: ``A.dtype``). The request is validated here,
    once (:func:`~deltainv.kernels.registry.resolve`, and the backend against the method); each
    call only picks the backend for its tensors' device (:func:`deltainv.kernels.backend.choose`).
    """
    recipe = resolve(method, precision, **options)
    backends.check_method(recipe, backend)
    from .tril.layout import solve_tril as _solve_tril

    def solve_tril(A, cu_seqlens=None, chunk_indices=None, output_dtype=torch.float):
        return _solve_tril(A, cu_seqlens, chunk_indices, output_dtype, method=recipe, backend=backend)

    solve_tril.deltainv = _info(recipe, backend)
    solve_tril.recipe = recipe
    return solve_tril


def gdn_fwd_intra(
    method: str | Recipe | None = None,
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
    the input dtypes. ``g`` is the in-chunk cumulative gate. The backend is chosen per call for
    the tensors' device (:func:`deltainv.kernels.backend.choose`): the fused Triton kernel or the
    PyTorch reference.
    """
    recipe = resolve(method, precision, **options)
    backends.check_method(recipe, backend)
    if wu_precision is not None:
        check_precision(wu_precision)
    from .gdn.pytorch import chunk_gated_delta_rule_fwd_intra as _torch_intra

    def chunk_gated_delta_rule_fwd_intra(k, v, g=None, beta=None, cu_seqlens=None, chunk_size=64, chunk_indices=None):
        if backends.choose(recipe, k.device, backend) == "triton":
            from .gdn.triton import chunk_gated_delta_rule_fwd_intra as fused

            return fused(k, v, g, beta, cu_seqlens, chunk_size, chunk_indices, gate_log2=gate_log2, recipe=recipe,
                         wu_precision=wu_precision)
        return _torch_intra(k, v, g, beta, cu_seqlens, chunk_size, chunk_indices, gate_log2=gate_log2,
                            method=recipe, wu_precision=wu_precision)

    chunk_gated_delta_rule_fwd_intra.deltainv = _info(recipe, backend, gate_log2=gate_log2, wu_precision=wu_precision)
    chunk_gated_delta_rule_fwd_intra.recipe = recipe
    return chunk_gated_delta_rule_fwd_intra


fla_gdn_fwd_intra = functools.partial(gdn_fwd_intra, gate_log2=True)
sglang_gdn_fwd_intra = functools.partial(gdn_fwd_intra, gate_log2=False)


def dplr_fwd_intra(
    method: str | Recipe | None = None,
    precision: str | None = None,
    *,
    backend: str = "auto",
    wu_precision: str | None = None,
    gate_log2: bool = True,
    **options: Any,
) -> Callable[..., tuple[torch.Tensor | None, ...]]:
    """``chunk_dplr_fwd_intra(q, k, v, a, b, gi, ge, scale, chunk_size=64, cu_seqlens=None, chunk_indices=None)``.

    fla 0.6.0's DPLR intra step and its WY step in one call (fla's ``chunk_dplr_fwd`` calls
    ``chunk_dplr_fwd_intra(q, k, a, b, gi, ge, scale, ...)`` and then ``prepare_wy_repr_fwd(ag, v,
    A_ak, A_ab, ...)``): returns fla's two tuples back to back, ``(A_ab, A_qk, A_ak, A_qb, qg, kg, ag,
    bg, w, u, A_ab_inv)`` (see :func:`deltainv.kernels.dplr.pytorch.chunk_dplr_fwd_intra`); ``gi``,
    ``ge`` come from fla's ``chunk_rwkv6_fwd_cumsum`` (log2 units). The backend is chosen per call for
    the tensors' device (:func:`deltainv.kernels.backend.choose`): the fused Triton kernel or the
    PyTorch reference.
    """
    recipe = resolve(method, precision, **options)
    backends.check_method(recipe, backend)
    if wu_precision is not None:
        check_precision(wu_precision)
    from .dplr.pytorch import chunk_dplr_fwd_intra as _torch_intra

    def chunk_dplr_fwd_intra(q, k, v, a, b, gi, ge, scale, chunk_size=64, cu_seqlens=None, chunk_indices=None):
        if backends.choose(recipe, k.device, backend) == "triton":
            from .dplr.triton import chunk_dplr_fwd_intra as fused

            return fused(q, k, v, a, b, gi, ge, scale, chunk_size, cu_seqlens, chunk_indices, gate_log2=gate_log2,
                         recipe=recipe, wu_precision=wu_precision)
        return _torch_intra(q, k, v, a, b, gi, ge, scale, chunk_size, cu_seqlens, chunk_indices, gate_log2=gate_log2,
                            method=recipe, wu_precision=wu_precision)

    chunk_dplr_fwd_intra.deltainv = _info(recipe, backend, gate_log2=gate_log2, wu_precision=wu_precision)
    chunk_dplr_fwd_intra.recipe = recipe
    return chunk_dplr_fwd_intra


#: KDA intra contracts: engine -> (parameter names, what is returned).
KDA_INTRA_PARAMS = {
    "fla": ("q", "k", "v", "gk", "beta", "scale", "cu_seqlens", "chunk_size", "chunk_indices", "safe_gate",
            "lower_bound", "disable_recompute", "use_graph"),
    "sglang": ("q", "k", "v", "gk", "beta", "scale", "cu_seqlens", "chunk_size", "chunk_indices", "safe_gate",
               "fuse_recompute", "fuse_diagonal"),
    "vllm": ("q", "k", "gk", "beta", "scale", "cu_seqlens", "chunk_size", "chunk_indices", "safe_gate"),
}


def kda_fwd_intra(
    method: str | Recipe | None = None,
    precision: str | None = None,
    *,
    contract: str,
    backend: str = "auto",
    wu_precision: str | None = None,
    a_precision: str | None = None,
    **options: Any,
) -> Callable[..., tuple[torch.Tensor | None, ...]]:
    """The engines' ``chunk_kda_fwd_intra`` (Kimi Delta Attention's intra step) with deltainv's inversion.

    All three take ``q, k`` ``[B, T, H, K]``, the in-chunk cumulative per-channel gate ``gk``
    ``[B, T, HV, K]`` in **log2** units, ``beta`` ``[B, T, HV]``, ``scale`` and packed ``cu_seqlens`` /
    ``chunk_indices``; they differ in what they return (read from the installed sources):

    - ``fla`` (0.6.0): ``(w, u, qg, kg, Aqk, Akk)``; ``qg`` only with ``disable_recompute=True``, else None.
    - ``sglang`` (0.5.23): ``(w, u, None, kg, Aqk, Akk)``; ``Akk`` None with ``fuse_recompute=True``.
    - ``vllm`` (0.32/0.33, Kimi Linear; no ``v``): ``(Aqk, Akk)``.

    ``Akk = (I + A)^-1``, ``Aqk = scale * lower(q k^T decay)``, ``w, kg`` in ``k.dtype``, ``u`` in ``v.dtype``
    (see :func:`deltainv.kernels.kda.pytorch.chunk_kda_fwd_intra`). ``safe_gate``/``lower_bound`` only
    bound the engines' own exponent ranges: deltainv's decays are split at reference rows between
    each pair and exact for any gate, so they are accepted and need nothing; ``use_graph``/
    ``fuse_diagonal`` are launch choices. The backend is chosen per call for the tensors' device
    (:func:`deltainv.kernels.backend.choose`): the fused Triton kernel
    (:mod:`deltainv.kernels.kda.triton`, chunk sizes up to 64, which is all the engines use; ``Akk``
    is not written where the contract returns None for it) or the PyTorch reference.
    ``a_precision`` chooses the fused kernel's decayed ``Akk``/``Aqk`` products (default by dtype:
    :func:`deltainv.kernels.kda.triton.default_a_precision`).
    """
    if contract not in KDA_INTRA_PARAMS:
        raise ValueError(f"unknown KDA intra contract {contract!r}; choose one of {', '.join(KDA_INTRA_PARAMS)}")
    recipe = resolve(method, precision, **options)
    backends.check_method(recipe, backend)
    if wu_precision is not None:
        check_precision(wu_precision)
    if a_precision is not None:
        from .kda.triton import A_PRECISIONS

        if a_precision not in A_PRECISIONS:
            raise ValueError(f"a_precision must be one of {', '.join(A_PRECISIONS)}; got {a_precision!r}")
    from .kda.pytorch import chunk_kda_fwd_intra as _intra

    def run(q, k, v, gk, beta, scale, cu_seqlens, chunk_size, chunk_indices, with_qg=False, store_a=True):
        if backends.choose(recipe, k.device, backend) == "triton":
            from .kda import triton as fused

            if chunk_size <= fused.MAX_CHUNK or backend == "triton":  # explicit triton: its clear error
                return fused.chunk_kda_fwd_intra(q, k, v, gk, beta, scale, cu_seqlens, chunk_size, chunk_indices,
                                                 gate_log2=True, with_qg=with_qg, recipe=recipe,
                                                 wu_precision=wu_precision, a_precision=a_precision,
                                                 store_a=store_a)
        return _intra(q, k, v, gk, beta, scale, cu_seqlens, chunk_size, chunk_indices, gate_log2=True,
                      with_qg=with_qg, method=recipe, wu_precision=wu_precision)

    if contract == "fla":
        def chunk_kda_fwd_intra(q, k, v, gk=None, beta=None, scale=None, cu_seqlens=None, chunk_size=64,
                                chunk_indices=None, safe_gate=False, lower_bound=None, disable_recompute=False,
                                use_graph=False):
            return run(q, k, v, gk, beta, scale, cu_seqlens, chunk_size, chunk_indices, with_qg=disable_recompute)
    elif contract == "sglang":
        def chunk_kda_fwd_intra(q, k, v, gk=None, beta=None, scale=None, cu_seqlens=None, chunk_size=64,
                                chunk_indices=None, safe_gate=False, fuse_recompute=False, fuse_diagonal=False):
            w, u, _, kg, Aqk, Akk = run(q, k, v, gk, beta, scale, cu_seqlens, chunk_size, chunk_indices,
                                        store_a=not fuse_recompute)
            return w, u, None, kg, Aqk, (None if fuse_recompute else Akk)
    else:
        def chunk_kda_fwd_intra(q, k, gk=None, beta=None, scale=None, cu_seqlens=None, chunk_size=64,
                                chunk_indices=None, safe_gate=False):
            *_, Aqk, Akk = run(q, k, None, gk, beta, scale, cu_seqlens, chunk_size, chunk_indices)
            return Aqk, Akk

    chunk_kda_fwd_intra.deltainv = _info(recipe, backend, contract=contract, wu_precision=wu_precision,
                                         a_precision=a_precision)
    chunk_kda_fwd_intra.recipe = recipe
    return chunk_kda_fwd_intra


fla_kda_fwd_intra = functools.partial(kda_fwd_intra, contract="fla")
sglang_kda_fwd_intra = functools.partial(kda_fwd_intra, contract="sglang")
vllm_kda_fwd_intra = functools.partial(kda_fwd_intra, contract="vllm")


def vllm_cpu_gdn(
    method: str | Recipe | None = None,
    precision: str | None = None,
    *,
    chunk_size: int = 64,
    **options: Any,
) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``chunk_gated_delta_rule_cpu(query, key, value, g, beta, initial_state, output_final_state, cu_seqlens, head_first, use_qk_l2norm_in_kernel, initial_state_indices, eps=1e-5)``.

    The contract of vLLM's CPU build (0.32/0.33), read from the wheel and measured against its C++
    kernel: ``query, key`` ``[1, T, H, K]``, ``value`` ``[1, T, HV, V]`` (bf16), ``g`` ``[1, T, HV]``
    (fp32, natural log, not cumulated), ``beta`` ``[1, T, HV]``, ``cu_seqlens`` ``[N + 1]`` int32;
    ``initial_state`` is the whole state pool ``[slots, HV, K, V]`` and ``initial_state_indices``
    ``[N]`` picks each sequence's slot. The final state of every sequence is written back into
    its slot in place; returns ``(o [1, T, HV, V] in query's dtype, initial_state)``. ``eps`` is the
    L2-norm epsilon (``x / sqrt(sum x^2 + eps)``). ``head_first=True`` is rejected, as the C++ kernel does.
    """
    recipe = resolve(method, precision, **options)
    from .chunking import l2norm
    from .gdn.pytorch import chunk_gated_delta_rule as _gdn

    def chunk_gated_delta_rule_cpu(query, key, value, g, beta, initial_state, output_final_state, cu_seqlens,
                                   head_first, use_qk_l2norm_in_kernel, initial_state_indices, eps=1e-5):
        if head_first:
            raise ValueError("chunk_gated_delta_rule_cpu: head_first=True is not supported")
        slots = initial_state_indices.to(device=initial_state.device, dtype=torch.int64)
        out_dtype = query.dtype
        if use_qk_l2norm_in_kernel:
            query, key = l2norm(query, eps), l2norm(key, eps)
        o, final = _gdn(query, key, value, g, beta, initial_state=initial_state[slots], output_final_state=True,
                        cu_seqlens=cu_seqlens, chunk_size=chunk_size, method=recipe)
        initial_state[slots] = final.to(initial_state.dtype)
        return o.to(out_dtype), initial_state

    chunk_gated_delta_rule_cpu.deltainv = _info(recipe, "torch")
    chunk_gated_delta_rule_cpu.recipe = recipe
    return chunk_gated_delta_rule_cpu


def transformers_gdn(
    method: str | Recipe | None = None,
    precision: str | None = None,
    **options: Any,
) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
    """``torch_chunk_gated_delta_rule(query, key, value, g, beta, chunk_size=64, initial_state=None, output_final_state=False, use_qk_l2norm_in_kernel=False, **kwargs)``.

    transformers' contract (5.19-5.23): ``query, key`` ``[B, T, H, K]``, ``value`` ``[B, T, HV, V]``,
    ``g, beta`` ``[B, T, HV]`` (natural-log gate, not cumulated), ``initial_state`` ``[B, HV, K, V]``;
    returns ``(o [B, T, HV, V] in query's dtype, final state fp32 or None)``; q, k L2-normalised with
    eps 1e-6, queries scaled by ``K ** -0.5``. Packed sequences (``cu_seqlens=`` in ``kwargs``, B = 1)
    are kept apart; every other keyword is ignored, as transformers does.
    """
    recipe = resolve(method, precision, **options)
    from .gdn.pytorch import chunk_gated_delta_rule as _gdn

    def torch_chunk_gated_delta_rule(query, key, value, g, beta, chunk_size=64, initial_state=None,
                                     output_final_state=False, use_qk_l2norm_in_kernel=False, **kwargs):
        o, final = _gdn(query, key, value, g, beta, initial_state=initial_state,
                        output_final_state=output_final_state, cu_seqlens=kwargs.get("cu_seqlens"),
                        chunk_size=chunk_size, use_qk_l2norm=use_qk_l2norm_in_kernel, method=recipe)
        return o.to(query.dtype), final

    torch_chunk_gated_delta_rule.deltainv = _info(recipe, "torch")
    torch_chunk_gated_delta_rule.recipe = recipe
    return torch_chunk_gated_delta_rule


def transformers_kda(
    method: str | Recipe | None = None,
    precision: str | None = None,
    **options: Any,
) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
    """``chunk_kimi_delta_attention(query, key, value, g, beta, chunk_size=64, initial_state=None, output_final_state=False, use_qk_l2norm_in_kernel=False, **kwargs)``.

    transformers' Kimi Linear contract (5.19-5.23): as :func:`transformers_gdn` with a per-channel
    gate ``g`` ``[B, T, HV, K]``.
    """
    recipe = resolve(method, precision, **options)
    from .kda.pytorch import chunk_kda as _kda

    def chunk_kimi_delta_attention(query, key, value, g, beta, chunk_size=64, initial_state=None,
                                   output_final_state=False, use_qk_l2norm_in_kernel=False, **kwargs):
        o, final = _kda(query, key, value, g, beta, initial_state=initial_state,
                        output_final_state=output_final_state, cu_seqlens=kwargs.get("cu_seqlens"),
                        chunk_size=chunk_size, use_qk_l2norm=use_qk_l2norm_in_kernel, method=recipe)
        return o.to(query.dtype), final

    chunk_kimi_delta_attention.deltainv = _info(recipe, "torch")
    chunk_kimi_delta_attention.recipe = recipe
    return chunk_kimi_delta_attention


def vllm_kda_fused_gate(
    method: str | Recipe | None = None,
    precision: str | None = None,
    *,
    chunk_size: int = 64,
    **options: Any,
) -> Callable[..., tuple[torch.Tensor, torch.Tensor | None]]:
    """``chunk_kda_with_fused_gate(q, k, v, raw_g, raw_beta, A_log, g_bias, scale=None, initial_state=None, output_final_state=False, lower_bound=None, use_qk_l2norm_in_kernel=False, cu_seqlens=None, out=None, **kwargs)``.

    vLLM 0.32/0.33's Kimi Linear prefill entry point (``vllm.models.kimi_k3.{nvidia,amd}.ops.
    third_party.kda``), read from the wheel: ``q, k, v`` ``[1, T, H, D]``; ``raw_g`` ``[1, T, H, D]``
    and ``raw_beta`` ``[1, T, H]`` before their activations, ``A_log`` ``[H]``, ``g_bias`` ``[H * D]``
    (see :mod:`deltainv.kernels.kda.gate`); ``initial_state`` ``[N, H, V, K]`` (vLLM keeps KDA states
    value-major), ``cu_seqlens`` ``[N + 1]``; q and k L2-normalised with eps 1e-6 when asked. Returns
    ``(o [1, T, H, V] in q's dtype, final states [N, H, V, K] fp32 or None)``; ``o`` is written into
    ``out`` when given. The whole chunked KDA is deltainv's PyTorch one (fp32, any device).
    """
    recipe = resolve(method, precision, **options)
    from .kda.gate import kda_beta, kda_gate
    from .kda.pytorch import chunk_kda as _kda

    def chunk_kda_with_fused_gate(q, k, v, raw_g, raw_beta, A_log, g_bias, scale=None, initial_state=None,
                                  output_final_state=False, lower_bound=None, use_qk_l2norm_in_kernel=False,
                                  cu_seqlens=None, out=None, **kwargs):
        g = kda_gate(raw_g, A_log, g_bias, lower_bound)
        state = None if initial_state is None else initial_state.float().mT   # -> [N, H, K, V]
        o, final = _kda(q, k, v, g, kda_beta(raw_beta), scale=scale, initial_state=state,
                        output_final_state=output_final_state, cu_seqlens=cu_seqlens, chunk_size=chunk_size,
                        use_qk_l2norm=use_qk_l2norm_in_kernel, method=recipe)
        if out is not None:
            out.copy_(o)
            o = out
        return o.to(q.dtype), (None if final is None else final.mT.contiguous())

    chunk_kda_with_fused_gate.deltainv = _info(recipe, "torch")
    chunk_kda_with_fused_gate.recipe = recipe
    return chunk_kda_with_fused_gate


def vllm_kda_packed_decode() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``fused_recurrent_kda_packed_decode(mixed_qkv, raw_g, raw_beta, A_log, dt_bias, lower_bound, initial_state, state_indices, scale=None, out=None)``.

    vLLM 0.32/0.33's Kimi Linear decode step (one token per sequence), read from the wheel:
    ``mixed_qkv`` ``[B, 2 H K + H V]`` (post-conv q, k, v of each token), ``raw_g`` ``[1, B, H, K]``,
    ``raw_beta`` ``[1, B, H]``, ``initial_state`` the whole pool ``[slots, H, V, K]``,
    ``state_indices`` ``[B]`` (a slot <= 0 is padding: its output is 0 and no state is touched).
    q and k are L2-normalised (eps 1e-6). Each used slot is advanced in place by
    :func:`deltainv.kernels.kda.pytorch.recurrent_kda_step`; returns ``(o [1, B, H, V] in
    mixed_qkv's dtype, initial_state)``. No inversion happens in a decode step.
    """
    from .kda.gate import kda_beta, kda_gate
    from .kda.pytorch import recurrent_kda_step

    def fused_recurrent_kda_packed_decode(mixed_qkv, raw_g, raw_beta, A_log, dt_bias, lower_bound, initial_state,
                                          state_indices, scale=None, out=None):
        _, H, V, K = initial_state.shape
        B = mixed_qkv.shape[0]
        if mixed_qkv.shape[-1] != 2 * H * K + H * V or raw_g.shape != (1, B, H, K) or raw_beta.shape != (1, B, H):
            raise ValueError(f"fused_recurrent_kda_packed_decode: mixed_qkv {tuple(mixed_qkv.shape)}, raw_g "
                             f"{tuple(raw_g.shape)}, raw_beta {tuple(raw_beta.shape)} do not match a state pool "
                             f"of {H} heads x {V} x {K}")
        q, k, v = mixed_qkv.split([H * K, H * K, H * V], dim=-1)
        o = torch.zeros(B, H, V, dtype=torch.float32, device=mixed_qkv.device)
        live = (state_indices > 0).nonzero().flatten()
        if live.numel():
            slots = state_indices[live].long()
            o_live, S = recurrent_kda_step(
                q[live].view(-1, H, K), k[live].view(-1, H, K), v[live].view(-1, H, V),
                kda_gate(raw_g[0, live], A_log, dt_bias, lower_bound), kda_beta(raw_beta[0, live]),
                initial_state[slots].float().mT, scale, use_qk_l2norm=True)
            o[live] = o_live
            initial_state[slots] = S.mT.to(initial_state.dtype)
        o = o.to(mixed_qkv.dtype).unsqueeze(0)
        if out is not None:
            out.copy_(o)
            o = out
        return o, initial_state

    fused_recurrent_kda_packed_decode.deltainv = {"backend": "torch", "does": "KDA decode step (no inversion)"}
    return fused_recurrent_kda_packed_decode


__all__ = [
    "KDA_INTRA_PARAMS",
    "dplr_fwd_intra",
    "fla_gdn_fwd_intra",
    "fla_kda_fwd_intra",
    "gdn_fwd_intra",
    "kda_fwd_intra",
    "sglang_kda_fwd_intra",
    "vllm_kda_fwd_intra",
    "sglang_gdn_fwd_intra",
    "solve_tril",
    "transformers_gdn",
    "transformers_kda",
    "vllm_cpu_gdn",
    "vllm_kda_fused_gate",
    "vllm_kda_packed_decode",
]
