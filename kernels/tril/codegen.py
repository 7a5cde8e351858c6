"""Generate the Triton inversion kernels as straight-line code over named 16x16 tiles.

Triton cannot index register tensors dynamically, so a BT x BT inverse held in registers is a set
of named 16x16 tiles (as in fla's hand-written 64x64 kernel). This module writes that code for
every (method, BT): it walks the same block structure as the PyTorch reference
(:mod:`deltainv.kernels.tril.pytorch`), emits one ``mm`` per nonzero tile product and never
multiplies a tile that is known to be zero.

Regenerate after editing (``deltainv.kernels.codegen`` writes every generated module)::

    .venv/bin/python -m deltainv.kernels.codegen

``tests/kernels/test_codegen.py`` fails when a generated file is stale.
"""

from __future__ import annotations

from collections.abc import Callable

TILE = 16
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


def emit_product_form(e: Emitter, L: str, prec: str, tag: str) -> str:
    """``(I - L)(I + L^2)(I + L^4)(I + L^8)`` of one 16x16 tile: 6 products."""
    X = e.let(f"EYE - {L}", f"x_{tag}")
    Y = e.let(f"mm({L}, {L}, ZERO, {prec})", f"y_{tag}")
    for step in range(1, 4):
        e.emit(f"{X} = mm({X}, {Y}, {X}, {prec})")
        if step < 3:
            e.emit(f"{Y} = mm({Y}, {Y}, ZERO, {prec})")
    return X


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


def emit_refinement(e: Emitter, L: Callable[[int, int], str], X: Tiles, nb: int, prec: str) -> Tiles:
    """One Newton-Schulz step ``X + X R`` with ``R = I - X - L X``, all lower tiles, tile-sparse."""
    R = {}
    for i in range(nb):
        for j in range(i + 1):
            lx = e.mm_sum([(L(i, k), X[k, j]) for k in range(j, i + 1)], prec)
            base = "EYE" if i == j else "ZERO"
            R[i, j] = e.let(f"{base} - {X[i, j]} - {lx}", f"r_{i}_{j}")
    out = {}
    for i in range(nb):
        for j in range(i + 1):
            out[i, j] = e.mm_sum([(X[i, k], R[k, j]) for k in range(j, i + 1)], prec, init=X[i, j])
    return out


def emit_inverse(e: Emitter, method: str, L: Callable[[int, int], str], nb: int) -> Tiles:
    """The inverse's lower tiles for ``method``; ``L(i, j)`` names the (i, j) tile of the input.

    Precisions are the kernel's constexprs: ``PREC`` (merges), ``BASE_PREC`` (the 16x16 product
    form) and ``REFINE_PREC`` (the Newton-Schulz step).
    """
    X: Tiles = {}
    if method == "substitution":
        diag = emit_forward_substitution(e, [L(d, d) for d in range(nb)], [f"{d}_{d}" for d in range(nb)])
        X.update({(d, d): x for d, x in enumerate(diag)})
        emit_block_substitution(e, L, X, nb, "PREC")
        return X
    for d in range(nb):
        X[d, d] = emit_product_form(e, L(d, d), "BASE_PREC", f"{d}_{d}")
    emit_block_doubling(e, L, X, nb, "PREC")
    if method == "mxr_refine":
        X = emit_refinement(e, L, X, nb, "REFINE_PREC")
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
O = tl.arange(0, 16)
EYE = eye_tile()
ZERO = zero_tile()"""


def _emit_block(e: Emitter, text: str) -> None:
    for line in text.splitlines():
        e.emit(line)


def solve_tril_kernel(method: str, bt: int) -> str:
    nb = bt // TILE
    e = Emitter()
    e.emit(f"BT: tl.constexpr = {bt}")
    _emit_block(e, _CHUNK_PROLOGUE)
    e.emit("a_base = A + (row0 * H + i_h) * BT")
    e.emit("o_base = Ai + (row0 * H + i_h) * BT")
    e.emit("stride = H * BT")
    loaded: dict[tuple[int, int], str] = {}

    def L(i: int, j: int) -> str:
        if (i, j) not in loaded:
            strict = "True" if i == j else "False"
            loaded[i, j] = e.let(f"load_tile(a_base, {TILE * i}, {TILE * j}, n_rows, stride, {strict})", f"a_{i}_{j}")
        return loaded[i, j]

    X = emit_inverse(e, method, L, nb)
    for i in range(nb):
        for j in range(nb):
            e.emit(f"store_tile(o_base, {TILE * i}, {TILE * j}, n_rows, stride, {X[i, j] if j <= i else 'ZERO'})")
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
        ["from deltainv.kernels.triton_tiles import autotune_configs, eye_tile, load_tile, mm, store_tile, zero_tile"],
        bodies,
        table,
    )
