"""Input generators: the matrices are what their docstrings say."""

import pytest
import torch

from deltainv.kernels.inputs import INPUTS, chunk_matrices, engine_layout, gdn_matrix, per_channel_matrix


@pytest.mark.parametrize("kind", list(INPUTS))
def test_strictly_lower_deterministic_and_bounded(kind, seed):
    A = chunk_matrices(kind, 8, 32, seed=seed)
    assert A.shape == (8, 32, 32) and A.dtype == torch.float32
    assert torch.count_nonzero(torch.triu(A)) == 0
    assert torch.equal(A, chunk_matrices(kind, 8, 32, seed=seed))
    if kind != "all_ones":
        assert not torch.equal(A, chunk_matrices(kind, 8, 32, seed=seed + 1))
    # |A_ij| <= beta_i |k_i . k_j| * decay <= beta_max for unit keys and decays <= 1.
    assert A.abs().max() <= INPUTS[kind].beta_max + 1e-6


def test_kinds_draw_from_separate_streams(seed):
    assert not torch.equal(chunk_matrices("gdn", 4, 16, seed=seed), chunk_matrices("kda", 4, 16, seed=seed))


def test_gdn_and_per_channel_formulas_against_loops(seed):
    g = torch.Generator().manual_seed(seed)
    n, C, d = 2, 8, 5
    k = torch.randn(n, C, d, generator=g, dtype=torch.float64)
    beta = torch.rand(n, C, generator=g, dtype=torch.float64)
    G = torch.cumsum(-torch.rand(n, C, d, generator=g, dtype=torch.float64), 1)
    A = gdn_matrix(k, beta, G[..., 0])
    P = per_channel_matrix(k * beta[..., None], k, G, G)
    for b in range(n):
        for i in range(C):
            for j in range(C):
                want = beta[b, i] * (k[b, i] @ k[b, j]) * torch.exp(G[b, i, 0] - G[b, j, 0]) if i > j else 0.0
                assert abs(A[b, i, j] - want) < 1e-12
                want = sum(beta[b, i] * k[b, i, c] * k[b, j, c] * torch.exp(G[b, i, c] - G[b, j, c])
                           for c in range(d)) if i > j else 0.0
                assert abs(P[b, i, j] - want) < 1e-12


def test_gdn_gate_reaches_zero_and_minus_twenty(seed):
    A0 = chunk_matrices("gdn_nogate", 64, 64, seed=seed).double()
    A = chunk_matrices("gdn_d64", 256, 64, seed=seed).double()
    # Without decay the far corner keeps its size; with decays down to -20/token some chunks are
    # nearly diagonal and some undamped (a fraction draws gate = 1).
    assert A0[:, -1, 0].abs().mean() > 0.02
    far = A[:, -1, 0].abs()
    assert (far < 1e-20).float().mean() > 0.1 and (far > 1e-3).float().mean() > 0.05


def test_engine_layout_places_each_chunk(seed):
    cu = torch.tensor([0, 5, 40, 41], dtype=torch.int64)
    A = engine_layout("gdn", 1, 41, 2, 16, cu_seqlens=cu, seed=seed)
    assert A.shape == (1, 41, 2, 16)
    # Row t of a chunk only has entries left of its own position in the chunk.
    for s, e in [(0, 5), (5, 21), (21, 37), (37, 40), (40, 41)]:
        blk = A[0, s:e].transpose(0, 1)
        assert torch.count_nonzero(torch.triu(blk[:, :, : e - s])) == 0
        assert torch.count_nonzero(blk[:, :, e - s:]) == 0
