"""The precision vocabulary shared by every method, kernel, CLI flag and plugin variable.

A *precision* names how the operands of each matrix product are rounded before the product;
accumulation is always fp32, as on GPU tensor cores (``tl.dot`` with an fp32 accumulator):

========  =====================================================================================
name      operands of each product
========  =====================================================================================
fp32      not rounded (Triton ``input_precision="ieee"``)
tf32      rounded to tf32 (8-bit exponent, 10-bit mantissa), round-to-nearest, ties away from zero
          (``cvt.rna.tf32.f32``; Hopper MMAs that read raw fp32 truncate instead, up to 2x worse)
tf32x3    split into ``hi = tf32(x)`` and ``lo = tf32(x - hi)``; ``a@b ~ hi@hi + hi@lo + lo@hi``
fp16      rounded to IEEE half (values beyond 65504 become inf, exactly as on the hardware)
bf16      rounded to bfloat16 (8-bit mantissa)
========  =====================================================================================

The PyTorch implementations *emulate* these roundings so the paper's precision study runs on any
device; the Triton kernels get the same names and map them onto ``tl.dot`` arguments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "tf32x3", "fp16", "bf16")

# Unit roundoff of each operand format (what one rounding costs, relative); tf32x3 keeps about
# 21 mantissa bits of each operand.
UNIT_ROUNDOFF: dict[str, float] = {
    "fp32": 2.0**-24,
    "tf32": 2.0**-11,
    "tf32x3": 2.0**-22,
    "fp16": 2.0**-11,
    "bf16": 2.0**-8,
}


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is in the vocabulary, else raise ``ValueError`` naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def round_tf32(x: torch.Tensor) -> torch.Tensor:
    """Round fp32 ``x`` to the nearest tf32 value (10 mantissa bits), ties away from zero.

    Non-finite values pass through; finite values that round past the fp32 range become inf.
    """
    if x.dtype != torch.float32:
        raise TypeError(f"round_tf32 expects float32, got {x.dtype}")
    bits = x.contiguous().view(torch.int32)
    # Sign-magnitude layout: adding half an ulp of the 13 dropped bits to the magnitude and
    # truncating rounds half away from zero, which is what cvt.rna does.
    rounded = ((bits + 0x1000) & ~0x1FFF).view(torch.float32)
    return torch.where(torch.isfinite(x), rounded, x)


def round_operand(x: torch.Tensor, precision: str) -> torch.Tensor:
    """Round an fp32 tensor to the operand format of ``precision`` and return it as fp32.

    ``tf32x3`` is not a single rounding (see :func:`matmul`); here it returns ``x`` unchanged.
    """
    if precision in ("fp32", "tf32x3"):
        return x
    if precision == "tf32":
        return round_tf32(x)
    if precision == "fp16":
        return x.to(torch.float16).to(torch.float32)
    if precision == "bf16":
        return x.to(torch.bfloat16).to(torch.float32)
    raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")


@contextlib.contextmanager
def _ieee_fp32_matmul(device: torch.device) -> Iterator[None]:
    """Keep CUDA from silently using TF32 for the fp32 products that emulate the vocabulary."""
    if device.type != "cuda" or not torch.backends.cuda.matmul.allow_tf32:
        yield
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = True


def matmul(a: torch.Tensor, b: torch.Tensor, precision: str) -> torch.Tensor:
    """``a @ b`` with operands rounded per ``precision`` and fp32 accumulation.

    Args:
        a: ``[..., M, K]`` float32.
        b: ``[..., K, N]`` float32 (broadcast like ``torch.matmul``).
        precision: a name from :data:`PRECISIONS`.

    Returns:
        ``[..., M, N]`` float32. Products of fp16/bf16/tf32-rounded operands are exact in fp32, so
        an fp32 matmul of the rounded operands is exactly what an fp32-accumulating MMA computes
        (up to summation order).
    """
    with _ieee_fp32_matmul(a.device):
        if precision == "tf32x3":
            a_hi = round_tf32(a)
            b_hi = round_tf32(b)
            a_lo = round_tf32(a - a_hi)
            b_lo = round_tf32(b - b_hi)
            # Small terms first, as Triton's 3xTF32 does, so they are not lost against hi@hi.
            return (a_lo @ b_hi + a_hi @ b_lo) + a_hi @ b_hi
        return round_operand(a, precision) @ round_operand(b, precision)
