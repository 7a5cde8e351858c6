"""Generate the Triton inversion kernels as straight-line code over named square tiles.

Triton cannot index register tensors dynamically, so a BT x BT inverse held in registers is a set
of named tiles (as in fla's hand-written 64x64 kernel). This module writes that code for every
(method, BT): it walks the same block structure as the PyTorch reference
(:mod:`deltainv.kernels.tril.pytorch`), emits one ``mm`` per nonzero tile product and never
multiplies a tile that is known to be zero.

Tiles are 16x16, except for ``mxr`` / ``mxr_refine`` at BT = 128 (:func:`tile_edge`). A 16x16
``tl.dot`` runs whole on every warp of a program (more warps repeat it rather than share it), and
at BT = 128 the 16x16 code needs far more registers than a thread has: ``mxr_refine`` with tf32x3
spilled 53 KB per thread and took 340-400 s of compile per autotune config on the CPU
(``python -m deltainv.bench.compile_time``). With 32x32 tiles that kernel has 216 dot calls instead
of 976, which is what compile time and register allocation grow with (24 s, 14 KB spills). Inside a 32x32 diagonal tile the 16x16 product forms and the
16 -> 32 merge are computed on masked 32x32 tiles: the masked-out entries are exact zeros, so the
products are the reference's, with extra zero terms.

Regenerate after editing (``deltainv.kernels.codegen`` writes every generated module)::

    .venv/bin/python -m deltainv.kernels.codegen

``tests/kernels/test_codegen.py`` fails when a generated file is stale.
"""

from __future__ import annotations

from collections.abc import Callable

TILE = 16  # the base block: 16x16 product forms / forward substitution
METHODS = ("substitution", "mxr", "mxr_refine")
SIZES = (16, 32, 64, 128)


class Emitter:
    """Collects the lines of a kernel body and names temporaries."""

    def __init__(self, indent: int = 1):
        self.lines: list[str] = []
        self.pad = "    " * indent
        self.count = 0

    def emit(self, line: str = "") -> None:
        self.lines.append(self.pad + line if line else "")

    def let(self, expr: str, name: str | None = None) -> str:
        if name is None:
            self.count += 1
            name = f"t{self.count}"
        self.emit(f"{name} = {expr}")
        return name

    def mm_sum(self, pairs: list[tuple[str, str]], prec: str, init: str = "ZERO") -> str:
        """``init + sum(a @ b)`` over ``pairs`` in order, accumulating in fp32."""
        acc = init
        for a, b in pairs:
            acc = self.let(f"mm({a}, {b}, {acc}, {prec})")
        return acc


Tiles = dict[tuple[int, int], str]


def tile_edge(method: str, bt: int) -> int:
    """The register tile edge of ``method``'s kernel at chunk size ``bt`` (see the module docstring)."""
    return 32 if bt == 128 and method != "substitution" else TILE


def emit_product_form(e: Emitter, L: str, prec: str, tag: str) -> str:
    """``(I - L)(I + L^2)(I + L^4)(I + L^8)``: the inverse of a 16x16 tile (or of each of the 16x16
    diagonal blocks of a block-diagonal tile, which it leaves block-diagonal): 6 products."""
    X = e.let(f"EYE - {L}", f"x_{tag}")
    Y = e.let(f"mm({L}, {L}, ZERO, {prec})", f"y_{tag}")
    for step in range(1, 4):
        e.emit(f"{X} = mm({X}, {Y}, {X}, {prec})")
        if step < 3:
            e.emit(f"{Y} = mm({Y}, {Y}, ZERO, {prec})")
    return X


def emit_base_32(e: Emitter, L: str, tag: str) -> str:
    """The inverse of a 32x32 diagonal tile from its two 16x16 blocks, as the reference builds it.

    The product form runs on the tile with its off-diagonal 16x16 block zeroed (``BASE_PREC``),
    then one doubling merge ``X21 = -(X22 L21) X11`` (``PREC``) on the tile with all but ``L21``
    zeroed: ``D - (D L21) D`` changes only the lower-left block, by exactly ``(X22 L21) X11``.
    """
    D = emit_product_form(e, e.let(f"diagonal_blocks({L}, 32, 16)", f"ld_{tag}"), "BASE_PREC", tag)
    P = e.let(f"mm({D}, lower_left_block({L}, 32), ZERO, PREC)", f"p_{tag}")
    e.emit(f"{D} = {D} - mm({P}, {D}, ZERO, PREC)")
    return D


def emit_forward_substitution(e: Emitter, Ls: list[str], tags: list[str]) -> list[str]:
    """All diagonal tiles at once: one 14-step row loop updating every tile (fp32, no products)."""
    Ss = [e.let(f"-{L}", f"s_{t}") for L, t in zip(Ls, tags)]
    e.emit("for r in range(2, 16):")
    inner = Emitter(indent=len(e.pad) // 4 + 1)
    for L, S in zip(Ls, Ss):
        inner.emit(f"row = tl.sum(tl.where((O == r)[:, None], -{L}, 0.0), 0)")
        inner.emit("row = tl.where(O < r, row, 0.0)")
        inner.emit(f"row = row + tl.sum(row[:, None] * {S}, 0)")
        inner.emit(f"{S} = tl.where((O == r)[:, None], row, {S})")
    e.lines += inner.lines
    return [e.let(f"{S} + EYE", f"x_{t}") for S, t in zip(Ss, tags)]


def emit_block_doubling(e: Emitter, L: Callable[[int, int], str], X: Tiles, nb: int, prec: str) -> None:
    """MBH from 16x16 diagonal inverses: ``X21 = -(X22 L21) X11`` level by level, tile-sparse."""
    s = 1
    while s < nb:
        for p in range(nb // (2 * s)):
            r0, r1 = 2 * p * s, 2 * p * s + s
            P = {}
            for i in range(s):              # X22 is lower block triangular
                for j in range(s):          # L21 is full
                    P[i, j] = e.mm_sum([(X[r1 + i, r1 + k], L(r1 + k, r0 + j)) for k in range(i + 1)], prec)
            for i in range(s):
                for l in range(s):          # X11 is lower block triangular
                    acc = e.mm_sum([(P[i, j], X[r0 + j, r0 + l]) for j in range(l, s)], prec)
                    X[r1 + i, r0 + l] = e.let(f"-{acc}", f"x_{r1 + i}_{r0 + l}")
        s *= 2


def emit_block_substitution(e: Emitter, L: Callable[[int, int], str], X: Tiles, nb: int, prec: str) -> None:
    """fla's merges: ``X_ij = -(X_ii L_ij) X_jj`` next to the diagonal, ``-X_ii sum_k L_ik X_kj`` beyond."""
    for dist in range(1, nb):
        for j in range(nb - dist):
            i = j + dist
            if dist == 1:
                t = e.mm_sum([(X[i, i], L(i, j))], prec)
                acc = e.mm_sum([(t, X[j, j])], prec)
            else:
                s = e.mm_sum([(L(i, k), X[k, j]) for k in range(j, i)], prec)
                acc = e.mm_sum([(X[i, i], s)], prec)
            X[i, j] = e.let(f"-{acc}", f"x_{i}_{j}")


def emit_refinement(e: Emitter, L: Callable[[int, int], str], X: Tiles, nb: int, prec: str,
                    sink: Callable[[int, int, str], None] | None = None) -> Tiles:
    """One Newton-Schulz step ``X + X R`` with ``R = I - X - L X``, all lower tiles, tile-sparse.

    Column by column: column ``j`` of the result needs only column ``j`` of ``R``, and after it
    column ``j`` of ``X`` and of ``L`` are dead, so registers free up as the step goes. ``sink(i, j,
    tile)`` is told of each finished tile at once (a kernel stores it there, ending its life).
    """
    out: Tiles = {}
    for j in range(nb):
        R = {}
        for i in range(j, nb):
            lx = e.mm_sum([(L(i, k), X[k, j]) for k in range(j, i + 1)], prec)
            base = "EYE" if i == j else "ZERO"
            R[i] = e.let(f"{base} - {X[i, j]} - {lx}", f"r_{i}_{j}")
        for i in range(j, nb):
            out[i, j] = e.mm_sum([(X[i, k], R[k]) for k in range(j, i + 1)], prec, init=X[i, j])
            if sink is not None:
                sink(i, j, out[i, j])
    return out


def emit_inverse(e: Emitter, method: str, L: Callable[[int, int], str], nb: int, tile: int = TILE,
                 L_refine: Callable[[int, int], str] | None = None,
                 sink: Callable[[int, int, str], None] | None = None) -> Tiles:
    """The inverse's lower tiles for ``method``; ``L(i, j)`` names the (i, j) tile of the input,
    ``nb`` tiles of edge ``tile`` (16, or 32 for :func:`emit_base_32`) a side.

    Precisions are the kernel's constexprs: ``PREC`` (merges), ``BASE_PREC`` (the 16x16 product
    form) and ``REFINE_PREC`` (the Newton-Schulz step). ``L_refine`` names the input tiles in the
    refinement (default ``L``; a kernel that can re-read them passes a loader, so they need not stay
    live across the doubling). ``sink(i, j, tile)`` is told of each finished tile as soon as it is
    final, which the refinement uses to end tiles' lives early; without a refinement it is told at
    the end.
    """
    X: Tiles = {}
    if method == "substitution":
        if tile != TILE:
            raise ValueError("substitution is generated on 16x16 tiles only")
        diag = emit_forward_substitution(e, [L(d, d) for d in range(nb)], [f"{d}_{d}" for d in range(nb)])
        X.update({(d, d): x for d, x in enumerate(diag)})
        emit_block_substitution(e, L, X, nb, "PREC")
    else:
        for d in range(nb):
            if tile == TILE:
                X[d, d] = emit_product_form(e, L(d, d), "BASE_PREC", f"{d}_{d}")
            else:
                X[d, d] = emit_base_32(e, L(d, d), f"{d}_{d}")
        emit_block_doubling(e, L, X, nb, "PREC")
        if method == "mxr_refine":
            return emit_refinement(e, L_refine or L, X, nb, "REFINE_PREC", sink)
    if sink is not None:
        for (i, j), t in X.items():
            sink(i, j, t)
    return X


# ------------------------------------------------------------------------------------------------
# solve_tril kernels: A [B, T, H, BT] -> Ai = (I + A)^-1, one program per (chunk, head)

_CHUNK_PROLOGUE = """\
i_t = tl.program_id(0).to(tl.int64)
i_bh = tl.program_id(1).to(tl.int64)
i_b = i_bh // H
i_h = i_bh % H
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
n_rows = eos - row0  # rows of this chunk that exist (the last chunk may be partial)
O = tl.arange(0, 16)"""


def _emit_block(e: Emitter, text: str) -> None:
    for line in text.splitlines():
        e.emit(line)


def solve_tril_kernel(method: str, bt: int) -> str:
    tile = tile_edge(method, bt)
    nb = bt // tile
    e = Emitter()
    e.emit(f"BT: tl.constexpr = {bt}")
    _emit_block(e, _CHUNK_PROLOGUE)
    e.emit(f"EYE = eye_tile({tile})")
    e.emit(f"ZERO = zero_tile({tile})")
    e.emit("a_base = A + (row0 * H + i_h) * BT")
    e.emit("o_base = Ai + (row0 * H + i_h) * BT")
    e.emit("stride = H * BT")
    for i in range(nb):  # the upper tiles first: they hold no registers
        for j in range(i + 1, nb):
            e.emit(f"store_tile(o_base, {tile * i}, {tile * j}, n_rows, stride, ZERO, {tile})")
    loaded: dict[tuple[int, int], str] = {}

    def load(i: int, j: int, name: str) -> str:
        strict = "True" if i == j else "False"
        return e.let(f"load_tile(a_base, {tile * i}, {tile * j}, n_rows, stride, {strict}, {tile})", name)

    def L(i: int, j: int) -> str:
        if (i, j) not in loaded:
            loaded[i, j] = load(i, j, f"a_{i}_{j}")
        return loaded[i, j]

    def L_again(i: int, j: int) -> str:
        # A re-read (L1/L2) costs less than keeping every input tile live from the doubling on.
        return load(i, j, f"ar_{i}_{j}")

    def store(i: int, j: int, t: str) -> None:
        e.emit(f"store_tile(o_base, {tile * i}, {tile * j}, n_rows, stride, {t}, {tile})")

    emit_inverse(e, method, L, nb, tile, L_refine=L_again, sink=store)
    name = f"{method}_bt{bt}_kernel"
    head = [
        "",
        f'@triton.autotune(configs=autotune_configs({bt}), key=["H", "IS_VARLEN", "PREC", "BASE_PREC", "REFINE_PREC"])',
        '@triton.jit(do_not_specialize=["T"])',
        f"def {name}(A, Ai, cu_seqlens, chunk_indices, T, H: tl.constexpr, IS_VARLEN: tl.constexpr,",
        f"{' ' * (len(name) + 5)}PREC: tl.constexpr, BASE_PREC: tl.constexpr, REFINE_PREC: tl.constexpr):",
        f'    """(I + A)^-1 of one {bt}x{bt} chunk by {method}; generated."""',
    ]
    return "\n".join(head + e.lines) + "\n"


def module_source(doc: str, imports: list[str], bodies: list[str], table: str) -> str:
    """A generated module: header, imports, kernels and the ``KERNELS`` table."""
    out = [
        f'"""{doc}',
        "",
        "GENERATED by ``python -m deltainv.kernels.codegen``; do not edit by hand.",
        '"""',
        "",
        "# fmt: off",
        "# ruff: noqa",
        "import triton",
        "import triton.language as tl",
        "",
        *imports,
        *bodies,
        "",
        table,
    ]
    return "\n".join(out)


def solve_tril_module() -> str:
    bodies = [solve_tril_kernel(m, bt) for m in METHODS for bt in SIZES]
    table = "KERNELS = {\n" + "".join(
        f'    ("{m}", {bt}): {m}_bt{bt}_kernel,\n' for m in METHODS for bt in SIZES) + "}\n"
    return module_source(
        "Triton (I + A)^-1 kernels in the engines' [B, T, H, BT] layout, one program per (chunk, head).",
        ["from deltainv.kernels.triton_tiles import (autotune_configs, diagonal_blocks, eye_tile, load_tile,",
         "                                          lower_left_block, mm, store_tile, zero_tile)"],
        bodies,
        table,
    )
