"""Make Triton's CPU interpreter (``TRITON_INTERPRET=1``, triton 3.8/3.9) run fla's and our kernels.

Three fixes, applied by :func:`install` (idempotent; a no-op unless ``TRITON_INTERPRET=1``). They
touch private interpreter internals, so they are checked against the installed version:

1. The autotuner benchmarks its configs, which needs a GPU driver: when interpreting, config
   pruning keeps exactly one config.
2. The variable of a ``for i in range(...)`` loop stays a Python int, so ``i.to(tl.int64)`` fails
   (fla's ``chunk_delta_h``): each such loop body first re-binds it as an interpreter tensor.
   Only plain ``range`` loops are rewritten; ``tl.static_range`` variables stay constexpr.
3. bf16 values are stored as raw uint16, so ``tl.dot`` and element-wise math on bf16 compute on
   bit patterns: operands are promoted to fp32 (the bits shifted left by 16) and arithmetic
   results rounded back to bf16 (round to nearest even). Bitwise ops keep the raw bits.
4. fp32 -> bf16/fp16 conversions truncate (no rounding mode given) or drop the carry into the
   exponent (``rtne``); the GPU rounds to nearest even, so these go through torch's conversion.
5. ``tl.dot`` ignores ``input_precision``, so a tf32 dot silently computes in fp32: fp32 operands
   of TF32 dots are rounded to tf32 (deltainv's ``round_tf32``, as ``cvt.rna``) and TF32x3 dots are
   split into hi/lo parts with three products, as the GPU does. (Triton's default precision for
   fp32 dots is tf32, so un-annotated fp32 dots are tf32 here too, as on the hardware.)
"""

from __future__ import annotations

import ast
import os

import numpy as np

_INSTALLED = False
_BITWISE = {np.bitwise_and, np.bitwise_or, np.bitwise_xor, np.left_shift, np.right_shift}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def install() -> bool:
    """Apply the fixes; return whether they are active."""
    global _INSTALLED
    if _INSTALLED or not interpreting():
        return _INSTALLED
    import triton
    import triton.language as tl
    from triton.runtime import autotuner, interpreter

    major_minor = tuple(int(x) for x in triton.__version__.split(".")[:2])
    if major_minor not in ((3, 8), (3, 9)):
        raise RuntimeError(f"tests/support/triton_interpreter.py is written for triton 3.8/3.9, not {triton.__version__}")

    original_prune = autotuner.Autotuner.prune_configs

    def prune_configs(self, kwargs):
        return original_prune(self, kwargs)[:1]

    autotuner.Autotuner.prune_configs = prune_configs

    def visit_For(self, node):
        node = self.generic_visit(node)
        it = node.iter
        is_range = isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range"
        if is_range and isinstance(node.target, ast.Name):
            rebind = ast.Assign(targets=[ast.Name(id=node.target.id, ctx=ast.Store())],
                                value=ast.Name(id=node.target.id, ctx=ast.Load()))
            node.body.insert(0, self.visit_Assign(ast.fix_missing_locations(ast.copy_location(rebind, node))))
            ast.fix_missing_locations(node)
        return node

    interpreter.ASTTransformer.visit_For = visit_For

    import torch

    Builder, Handle = interpreter.InterpreterBuilder, interpreter.TensorHandle
    ir = interpreter._ir
    original_convert = interpreter._convert_float
    narrow = {tl.bfloat16: torch.bfloat16, tl.float16: torch.float16}

    def _convert_float(data, src, dst, rounding_mode):
        if src != tl.float32 or dst not in narrow:
            return original_convert(data, src, dst, rounding_mode)
        x = torch.from_numpy(np.ascontiguousarray(data).view(np.float32))
        if rounding_mode == ir.ROUNDING_MODE.RTZ:
            x = (x.view(torch.int32) & ~0xFFFF).view(torch.float32) if dst == tl.bfloat16 else x
        return x.to(narrow[dst]).view(torch.int16).numpy().view(np.uint16)

    interpreter._convert_float = _convert_float
    convert = _convert_float

    def to_fp32(h):
        if h.dtype.scalar == tl.bfloat16:
            return convert(h.data, tl.bfloat16, tl.float32, None).view(np.float32)
        return h.data

    original_dot = Builder.create_dot

    from deltainv.kernels.precision import round_tf32

    def tf32(x):
        return round_tf32(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if tl.bfloat16 in (a.dtype.scalar, b.dtype.scalar):
            a = Handle(to_fp32(a), tl.float32)
            b = Handle(to_fp32(b), tl.float32)
        elif a.dtype.scalar == tl.float32 and b.dtype.scalar == tl.float32:
            if input_precision == ir.INPUT_PRECISION.TF32:
                a, b = Handle(tf32(a.data), tl.float32), Handle(tf32(b.data), tl.float32)
            elif input_precision == ir.INPUT_PRECISION.TF32x3:
                a_hi, b_hi = tf32(a.data), tf32(b.data)
                a_lo, b_lo = tf32(a.data - a_hi), tf32(b.data - b_hi)
                small = np.matmul(a_lo, b_hi, dtype=np.float32) + np.matmul(a_hi, b_lo, dtype=np.float32)
                return Handle(np.matmul(a_hi, b_hi, dtype=np.float32) + small + d.data, d.dtype.scalar)
        return original_dot(self, a, b, d, input_precision, max_num_imprecise_acc)

    original_binary = Builder.binary_op

    def binary_op(self, lhs, rhs, op):
        if op in _BITWISE or tl.bfloat16 not in (lhs.dtype.scalar, rhs.dtype.scalar):
            return original_binary(self, lhs, rhs, op)
        out = op(to_fp32(lhs), to_fp32(rhs))
        if out.dtype == np.bool_:
            return Handle(out, tl.int1)
        return Handle(convert(out.astype(np.float32), tl.float32, tl.bfloat16, None).view(np.uint16), tl.bfloat16)

    original_unary = Builder.unary_op

    def unary_op(self, arg, op):
        if arg.dtype.scalar != tl.bfloat16:
            return original_unary(self, arg, op)
        out = op(to_fp32(arg)).astype(np.float32)
        return Handle(convert(out, tl.float32, tl.bfloat16, None).view(np.uint16), tl.bfloat16)

    Builder.create_dot = create_dot
    Builder.binary_op = binary_op
    Builder.unary_op = unary_op
    # The create_* lambdas close over the method names, so rebinding the methods is enough.
    _INSTALLED = True
    return True
