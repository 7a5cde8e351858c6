"""The generated inversion kernels' schedule: what is live when (registers are the kernels' limit).

Results do not depend on it (each tile's products keep their order; tests/kernels/tril/test_triton.py
checks the numbers), so these read the generated source.
"""

import re

import pytest

from deltainv.kernels.tril.codegen import SIZES, solve_tril_kernel, tile_edge


def _lines(method, bt):
    return [line.strip() for line in solve_tril_kernel(method, bt).splitlines()]


def _first(lines, pattern):
    return next(n for n, line in enumerate(lines) if re.search(pattern, line))


def _last(lines, pattern):
    return max(n for n, line in enumerate(lines) if re.search(pattern, line))


@pytest.mark.parametrize("bt", SIZES)
@pytest.mark.parametrize("method", ["substitution", "mxr", "mxr_refine"])
def test_every_tile_is_stored_once(method, bt):
    tile = tile_edge(method, bt)
    nb = bt // tile
    stores = [line for line in _lines(method, bt) if line.startswith("store_tile(")]
    spots = [tuple(int(x) for x in re.match(r"store_tile\(o_base, (\d+), (\d+), .*, (\d+)\)$", s).groups())
             for s in stores]
    assert sorted(spots) == sorted((tile * i, tile * j, tile) for i in range(nb) for j in range(nb))


@pytest.mark.parametrize("bt", [32, 64, 128])
def test_refinement_rereads_the_input_instead_of_keeping_it_live(bt):
    lines = _lines("mxr_refine", bt)
    first_reread = _first(lines, r"^ar_\d+_\d+ = load_tile\(")
    assert _last(lines, r"\ba_\d+_\d+\b") < first_reread


@pytest.mark.parametrize("bt", [32, 64, 128])
def test_refinement_stores_each_column_before_the_next_one_starts(bt):
    tile = tile_edge("mxr_refine", bt)
    nb = bt // tile
    lines = _lines("mxr_refine", bt)
    for j in range(nb - 1):
        next_column = _first(lines, rf"^r_{j + 1}_{j + 1} = ")
        for i in range(j, nb):
            assert _first(lines, rf"^store_tile\(o_base, {tile * i}, {tile * j}, ") < next_column, (i, j)
        # and column j of the doubling's result is not read again
        assert _last(lines, rf"\bx_\d+_{j}\b") < next_column


def test_chunks_of_128_use_32x32_tiles_for_the_matmul_methods():
    assert [tile_edge(m, 128) for m in ("substitution", "mxr", "mxr_refine")] == [16, 32, 32]
    assert {tile_edge(m, bt) for m in ("substitution", "mxr", "mxr_refine") for bt in (16, 32, 64)} == {16}
    body = solve_tril_kernel("mxr_refine", 128)
    assert "load_tile(a_base, 96, 64, n_rows, stride, False, 32)" in body
    assert body.count("diagonal_blocks(") == 4 and body.count("lower_left_block(") == 4
