"""Generate the fused GDN intra-chunk Triton kernels: kkt -> (I + A)^-1 -> W, U, in registers.

One program per (chunk, value head). The chunk matrix ``A = strictLower(diag(beta) K K^T *
exp(G_i - G_j))`` is built tile by tile from ``k``, ``beta`` and the cumulative gate, inverted with
the same tile algorithms as ``solve_tril`` (:func:`deltainv.kernels.tril.codegen.emit_inverse`),
and multiplied into ``W = T (beta exp(G) K)`` and ``U = T (beta V)`` without ``T`` leaving
registers. ``T`` is also stored (the engines' contract returns it) unless ``STORE_A`` is off.
"""

from __future__ import annotations

from ..tril.codegen import TILE, Emitter, emit_inverse, module_source

METHODS = ("substitution", "mxr", "mxr_refine")
SIZES = (16, 32, 64, 128)

_PROLOGUE = """\
i_t = tl.program_id(0).to(tl.int64)
i_bh = tl.program_id(1).to(tl.int64)
i_b = i_bh // HV
i_hv = i_bh % HV
i_hk = i_hv // (HV // H)
if IS_VARLEN:
    i_n = tl.load(chunk_indices + i_t * 2).to(tl.int64)
    i_c = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int64)
    if i_n < 0:
        return  # graph-capture padding row
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
else:
    i_c = i_t
    bos = i_b * T
    eos = bos + T
row0 = bos + i_c * BT
n_rows = eos - row0
O = tl.arange(0, 16)
EYE = eye_tile()
ZERO = zero_tile()
k_base = k + (row0 * H + i_hk) * K
v_base = v + (row0 * HV + i_hv) * V
b_base = beta + row0 * HV + i_hv
w_base = w + (row0 * HV + i_hv) * K
u_base = u + (row0 * HV + i_hv) * V"""


def intra_kernel(method: str, bt: int) -> str:
    nb = bt // TILE
    e = Emitter()
    e.emit(f"BT: tl.constexpr = {bt}")
    for line in _PROLOGUE.splitlines():
        e.emit(line)
    for i in range(nb):
        e.emit(f"b_{i} = load_vec(b_base, {TILE * i}, n_rows, HV)")
    e.emit("if USE_G:")
    for i in range(nb):
        e.emit(f"    g_{i} = load_vec(g + row0 * HV + i_hv, {TILE * i}, n_rows, HV)")
    e.emit("else:")
    for i in range(nb):
        e.emit(f"    g_{i} = ZERO_VEC")
    e.emit("# kkt: K K^T tile by tile, accumulated over K in BK-wide slices")
    kk = {}
    for i in range(nb):
        for j in range(i + 1):
            kk[i, j] = e.let("ZERO", f"kk_{i}_{j}")
    e.emit("for i_k in range(0, K, BK):")
    inner = Emitter(indent=2)
    for i in range(nb):
        inner.emit(f"k_{i} = load_rows(k_base, {TILE * i}, i_k, n_rows, H * K, K, BK)")
    for i in range(nb):
        for j in range(i + 1):
            inner.emit(f"{kk[i, j]} = mm(k_{i}, tl.trans(k_{j}), {kk[i, j]}, KKT_PREC)")
    e.lines += inner.lines
    e.emit("# A = strictLower(diag(beta) K K^T * exp(G_i - G_j)); masked before exp")
    A = {}
    for i in range(nb):
        for j in range(i + 1):
            diag = "True" if i == j else "False"
            A[i, j] = e.let(
                f"gate_tile({kk[i, j]}, b_{i}, g_{i}, g_{j}, {TILE * i}, n_rows, {diag}, USE_G, GATE_LOG2)",
                f"a_{i}_{j}")
    X = emit_inverse(e, method, lambda i, j: A[i, j], nb)
    e.emit("if STORE_A:")
    store = Emitter(indent=2)
    store.emit("a_base = Ai + (row0 * HV + i_hv) * BT")
    for i in range(nb):
        for j in range(nb):
            store.emit(f"store_tile(a_base, {TILE * i}, {TILE * j}, n_rows, HV * BT, {X[i, j] if j <= i else 'ZERO'})")
    e.lines += store.lines
    e.emit("# W = T (beta exp(G) K), U = T (beta V): T stays in registers")
    for i in range(nb):
        e.emit(f"bg_{i} = b_{i} * gate_exp(g_{i}, USE_G, GATE_LOG2)")
    for out, src, width, block, scale, base in (("w", "k", "K", "BK", "bg", "w_base"),
                                                ("u", "v", "V", "BV", "b", "u_base")):
        stride = "H * K" if src == "k" else "HV * V"
        src_base = f"{src}_base"
        e.emit(f"for i_o in range(0, {width}, {block}):")
        body = Emitter(indent=2)
        for j in range(nb):
            body.emit(f"s_{j} = load_rows({src_base}, {TILE * j}, i_o, n_rows, {stride}, {width}, {block}).to(tl.float32)"
                      f" * {scale}_{j}[:, None]")
        for i in range(nb):
            acc = f"tl.zeros([16, {block}], dtype=tl.float32)"
            for j in range(i + 1):
                body.emit(f"acc = mm({X[i, j]}, s_{j}, {acc}, WU_PREC)")
                acc = "acc"
            out_stride = "HV * K" if out == "w" else "HV * V"
            body.emit(f"store_rows({base}, {TILE * i}, i_o, n_rows, {out_stride}, {width}, {block}, acc)")
        e.lines += body.lines
    name = f"gdn_intra_{method}_bt{bt}_kernel"
    pad = " " * (len(name) + 5)
    head = [
        "",
        f'@triton.autotune(configs=autotune_configs({bt}), key=["H", "HV", "K", "V", "IS_VARLEN", "USE_G", "PREC",',
        '                                                  "BASE_PREC", "REFINE_PREC", "WU_PREC", "STORE_A"])',
        '@triton.jit(do_not_specialize=["T"])',
        f"def {name}(k, v, g, beta, w, u, Ai, cu_seqlens, chunk_indices, T,",
        f"{pad}H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,",
        f"{pad}BK: tl.constexpr, BV: tl.constexpr, IS_VARLEN: tl.constexpr, USE_G: tl.constexpr,",
        f"{pad}GATE_LOG2: tl.constexpr, STORE_A: tl.constexpr, KKT_PREC: tl.constexpr, PREC: tl.constexpr,",
        f"{pad}BASE_PREC: tl.constexpr, REFINE_PREC: tl.constexpr, WU_PREC: tl.constexpr):",
        f'    """kkt -> (I + A)^-1 by {method} -> W, U for one {bt}-token chunk and value head; generated."""',
        "    ZERO_VEC = tl.zeros([16], dtype=tl.float32)",
    ]
    return "\n".join(head + e.lines) + "\n"


def intra_module() -> str:
    bodies = [intra_kernel(m, bt) for m in METHODS for bt in SIZES]
    table = "KERNELS = {\n" + "".join(
        f'    ("{m}", {bt}): gdn_intra_{m}_bt{bt}_kernel,\n' for m in METHODS for bt in SIZES) + "}\n"
    return module_source(
        "Fused GDN intra-chunk Triton kernels: kkt -> (I + A)^-1 -> W, U with the inverse kept in registers.",
        ["from deltainv.kernels.triton_tiles import (autotune_configs, eye_tile, gate_exp, gate_tile, load_rows, load_vec,",
         "                                          mm, store_rows, store_tile, zero_tile)"],
        bodies,
        table,
    )
