"""Error metrics of a computed inverse against a float64 reference.

For a batch of chunk matrices ``A`` (``[..., C, C]``) and a computed ``X ~ (I + A)^-1``:

- ``rel_fro``: ``||X - X*||_F / ||X*||_F`` per matrix, worst over the batch (``rel_fro_median``
  gives the typical one);
- ``max_abs``: ``max |X - X*|`` over the whole batch;
- ``residual``: ``||(I + A) X - I||_F`` per matrix, worst over the batch;
- ``nonfinite``: number of NaN/inf entries of ``X``.

``X*`` is ``torch.linalg.solve_triangular`` in float64 on the same (already rounded) ``A``.
A matrix with any non-finite entry has infinite error.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch


def reference_inverse(A: torch.Tensor) -> torch.Tensor:
    """``(I + strictLower(A))^-1`` in float64: ``[..., C, C]``."""
    L = A.to(torch.float64).tril(-1)
    eye = torch.eye(L.shape[-1], dtype=torch.float64, device=L.device).expand_as(L)
    return torch.linalg.solve_triangular(L, eye, upper=False, unitriangular=True)


@dataclass(frozen=True)
class ErrorStats:
    rel_fro: float
    rel_fro_median: float
    max_abs: float
    residual: float
    nonfinite: int
    count: int

    def as_dict(self) -> dict:
        return asdict(self)


def error_stats(A: torch.Tensor, X: torch.Tensor, ref: torch.Tensor | None = None) -> ErrorStats:
    """Compare ``X`` with the float64 inverse of ``A``; see the module docstring for the metrics."""
    L = A.to(torch.float64).tril(-1)
    Xd = X.to(torch.float64)
    ref = reference_inverse(A) if ref is None else ref
    flat = (-1, *Xd.shape[-2:])
    L, Xd, ref = L.reshape(flat), Xd.reshape(flat), ref.reshape(flat)
    if Xd.shape[0] == 0:
        raise ValueError("error_stats needs at least one matrix")
    finite = torch.isfinite(Xd).all(dim=(-2, -1))
    inf = torch.tensor(math.inf, dtype=torch.float64)
    diff = Xd - ref
    rel = torch.where(finite, diff.norm(dim=(-2, -1)) / ref.norm(dim=(-2, -1)), inf)
    eye = torch.eye(Xd.shape[-1], dtype=torch.float64)
    res = torch.where(finite, (Xd + L @ Xd - eye).norm(dim=(-2, -1)), inf)
    max_abs = diff.abs().max().item() if bool(finite.all()) else math.inf
    return ErrorStats(
        rel_fro=rel.max().item(),
        rel_fro_median=rel.median().item(),
        max_abs=max_abs,
        residual=res.max().item(),
        nonfinite=int((~torch.isfinite(Xd)).sum()),
        count=Xd.shape[0],
    )
