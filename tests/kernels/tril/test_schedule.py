"""The inversion kernels' memory schedule, read from the compiled Triton IR (no GPU needed).

Results do not depend on it (tests/kernels/tril/test_triton.py checks the numbers); speed does: every
output element is written exactly once (no zero-fill pass), every input tile is loaded once and
before any arithmetic, and the products are batched ``[NC, S, S]`` dots (one chunk per warp) rather
than 2-D dots repeated in every warp.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from deltainv.kernels.tril.triton import tile_edge

_COMPILE = """
import inspect, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from deltainv.kernels.tril.triton import solve_tril_kernel, tile_edge
method, bt, precision, nc = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
fn = solve_tril_kernel
while not isinstance(fn, triton.runtime.jit.JITFunction):
    fn = fn.fn
params = list(inspect.signature(fn.fn).parameters)
types = {"A": "*fp32", "Ai": "*bf16", "cu_seqlens": "*i32", "chunk_indices": "*i32", "T": "i32", "n_items": "i32"}
values = {"H": 4, "BT": bt, "S": tile_edge(method, bt), "IS_VARLEN": True, "METHOD": method, "PREC": precision,
          "BASE_PREC": precision, "REFINE_PREC": precision, "NC": nc}
src = ASTSource(fn=fn, signature={p: types.get(p, "constexpr") for p in params},
                constexprs={(params.index(k),): v for k, v in values.items()})
compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": nc, "num_stages": 1})
print(compiled.asm["ttir"])
"""


def _ttir(method: str, bt: int, precision: str, nc: int = 4) -> str:
    """The kernel's optimised Triton IR (functions inlined) for sm_90, compiled on this CPU in a child
    process: under the interpreter (tests/conftest.py) ``@triton.jit`` functions have no IR."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", _COMPILE, method, str(bt), precision, str(nc)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("method,bt", [("substitution", 32), ("blocked", 32), ("mxr_refine", 32), ("mxr", 64)])
def test_every_output_tile_stored_once_inputs_loaded_once_up_front(method, bt):
    ir = _ttir(method, bt, "tf32x3")
    nb = bt // tile_edge(method, bt)
    ops = re.findall(r"= tt\.(load|dot|store)\b|^\s*tt\.(store)\b", ir, flags=re.MULTILINE)
    ops = [a or b for a, b in ops]
    stores = ops.count("store")
    tile_loads = [n for n, op in enumerate(ops) if op == "load"]
    # 4 loads of the varlen chunk table + cu_seqlens bounds, then one load per lower input tile
    assert stores == nb * nb, f"{stores} stores for {nb * nb} output tiles"
    assert len(tile_loads) == 4 + nb * (nb + 1) // 2
    assert max(tile_loads) < ops.index("dot"), "an input tile is loaded after the arithmetic started"
    # batched products: every dot is [NC, S, S] x [NC, S, S]
    s = tile_edge(method, bt)
    dots = re.findall(r"tt\.dot .*? -> tensor<([0-9x]+)xf32", ir)
    assert dots and set(dots) == {f"4x{s}x{s}"}
