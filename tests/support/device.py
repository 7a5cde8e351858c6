"""Where kernel tests put their tensors, and how they compare a kernel's output with the reference.

On a CPU machine the kernels run under Triton's interpreter, whose arithmetic the PyTorch precision
emulation reproduces operation by operation: there the tests demand near-identity. On a GPU the
tensor cores round operands in their own way (tf32 takes the top bits of an fp32 register as they
are) and accumulate in their own order, so near-identity with the emulation is the wrong question;
the right one is whether the kernel is as accurate as the reference, both measured against float64.
"""

from __future__ import annotations

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = not torch.cuda.is_available()

#: On a GPU the kernel's error against float64 may exceed the reference's by this factor ...
GPU_ERROR_FACTOR = 4.0
#: ... plus this much relative Frobenius error (a few fp32 roundings of the output).
GPU_ERROR_FLOOR = 1e-6


def _rel_fro(x: torch.Tensor, truth: torch.Tensor) -> float:
    x, truth = x.double().cpu(), truth.double().cpu()
    return float((x - truth).norm() / truth.norm().clamp_min(1e-300))


def assert_kernel_close(got: torch.Tensor, ref: torch.Tensor, truth: torch.Tensor, *,
                        atol: float, rtol: float = 0.0, msg: str = "") -> None:
    """``got`` (kernel) against ``ref`` (PyTorch reference at the same precision).

    Interpreter: elementwise within ``atol``/``rtol``. GPU: every element finite and the relative
    Frobenius error against ``truth`` (float64) at most ``GPU_ERROR_FACTOR`` times the reference's
    plus ``GPU_ERROR_FLOOR``.
    """
    got_c = got.detach().cpu()
    assert torch.isfinite(got_c).all(), f"{msg}: non-finite or unwritten elements"
    if INTERPRETED:
        torch.testing.assert_close(got_c.to(ref.dtype), ref.cpu(), rtol=rtol, atol=atol, msg=msg)
        return
    err, err_ref = _rel_fro(got_c, truth), _rel_fro(ref, truth)
    bound = GPU_ERROR_FACTOR * err_ref + GPU_ERROR_FLOOR
    assert err <= bound, f"{msg}: error vs float64 {err:.2e} > {bound:.2e} (reference's own: {err_ref:.2e})"
