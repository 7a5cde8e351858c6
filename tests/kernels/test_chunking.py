"""``deltainv.kernels.chunking``: the helpers the chunked GDN / KDA / DPLR references share."""

from __future__ import annotations

import pytest
import torch

from deltainv.kernels.chunking import (
    check_inputs,
    gather,
    heads_first,
    last_rows,
    pairwise_decay,
    scatter,
)
from deltainv.kernels.index import chunk_table


def _table():
    # two sequences of 5 and 3 tokens, chunks of 4: rows [0..3], [4, pad x3], [5, 6, 7, pad]
    return chunk_table(1, 8, 4, torch.tensor([0, 5, 8]))


def test_gather_pads_data_with_zeros_and_cumulated_gates_with_the_last_real_row():
    table = _table()
    x = torch.arange(1.0, 9.0).reshape(1, 8, 1)
    assert last_rows(table).tolist() == [3, 4, 7]
    assert gather(x, table)[..., 0].tolist() == [[1, 2, 3, 4], [5, 0, 0, 0], [6, 7, 8, 0]]
    assert gather(x, table, pad="edge")[..., 0].tolist() == [[1, 2, 3, 4], [5, 5, 5, 5], [6, 7, 8, 8]]
    with pytest.raises(ValueError, match="pad must be 'zero' or 'edge'"):
        gather(x, table, pad="last")


def test_scatter_inverts_gather_and_drops_padding_rows():
    table = _table()
    x = torch.randn(1, 8, 3, 2)
    chunks = gather(x, table, pad="edge")
    assert torch.equal(scatter(chunks, table, 1, 8, torch.float32), x)


def test_heads_first_expands_grouped_heads():
    x = torch.arange(2 * 4 * 2 * 3.0).reshape(2, 4, 2, 3)   # [NT, BT, H, D]
    y = heads_first(x, repeat=2)                           # [NT, 4 heads, BT, D]
    assert y.shape == (2, 4, 4, 3)
    assert torch.equal(y[:, 0], x[:, :, 0]) and torch.equal(y[:, 1], x[:, :, 0]) and torch.equal(y[:, 3], x[:, :, 1])


@pytest.mark.parametrize("log2", [False, True])
def test_pairwise_decay_is_masked_before_the_exponential(log2):
    G = torch.tensor([0.0, -50.0, -200.0, -1000.0])  # exp(G_j - G_i) above the diagonal would overflow
    D = pairwise_decay(G, log2, strict=True)
    assert torch.isfinite(D).all() and torch.equal(D.triu(), torch.zeros(4, 4))
    base = 2.0 if log2 else torch.e
    assert D[1, 0] == pytest.approx(base**-50.0, rel=1e-5)
    assert torch.equal(pairwise_decay(G, log2, strict=False).diagonal(), torch.ones(4))


def test_check_inputs_names_the_tensor():
    k, v, beta = torch.zeros(1, 8, 2, 4), torch.zeros(1, 8, 4, 3), torch.zeros(1, 8, 4)
    assert check_inputs(k, v, beta, torch.zeros(1, 8, 4)) == (2, 4)
    assert check_inputs(k, v, beta, torch.zeros(1, 8, 4, 4), gate_per_channel=True) == (2, 4)
    with pytest.raises(ValueError, match=r"v \[1, 8, 3, 3\] does not match k .*HV must be a multiple of H"):
        check_inputs(k, torch.zeros(1, 8, 3, 3), torch.zeros(1, 8, 3))
    with pytest.raises(ValueError, match=r"beta must be \[B, T, HV\] = \[1, 8, 4\]"):
        check_inputs(k, v, torch.zeros(1, 8, 2))
    with pytest.raises(ValueError, match=r"g must be \[B, T, HV, K\] = \[1, 8, 4, 4\] \(one gate per channel\)"):
        check_inputs(k, v, beta, torch.zeros(1, 8, 4), gate_per_channel=True)
    with pytest.raises(ValueError, match="q must have k's shape"):
        check_inputs(k, v, beta, q=torch.zeros(1, 8, 2, 5))
