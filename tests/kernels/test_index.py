"""Varlen bookkeeping: identical to fla's, and checked."""

import pytest
import torch

from deltainv.kernels.index import chunk_spans, prepare_chunk_indices, prepare_chunk_offsets


def _random_cu(seed, n=7):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(0, 300, (n,), generator=g)
    return torch.nn.functional.pad(lens.cumsum(0), (1, 0)).to(torch.int32)


@pytest.mark.parametrize("BT", [16, 64, 128])
def test_matches_fla(BT, seed):
    index = pytest.importorskip("fla.ops.utils.index")
    cu = _random_cu(seed)
    ours = prepare_chunk_indices(cu, BT)
    theirs = index.prepare_chunk_indices(cu, BT)
    assert ours.dtype == theirs.dtype == cu.dtype
    assert torch.equal(ours, theirs)
    assert torch.equal(prepare_chunk_offsets(cu, BT), index.prepare_chunk_offsets(cu, BT).to(cu.dtype))


def test_spans_cover_every_token_once(seed):
    cu = _random_cu(seed, 9)
    starts, ends = chunk_spans(cu, 64)
    covered = torch.zeros(int(cu[-1]), dtype=torch.int64)
    for s, e in zip(starts.tolist(), ends.tolist()):
        assert 0 < e - s <= 64
        covered[s:e] += 1
    assert torch.all(covered == 1)


def test_empty_sequences_have_no_chunks():
    cu = torch.tensor([0, 0, 5, 5, 70], dtype=torch.int64)
    assert prepare_chunk_indices(cu, 64).tolist() == [[1, 0], [3, 0], [3, 1]]
