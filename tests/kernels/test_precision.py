"""The precision vocabulary: roundings bit-exact, products accumulate in fp32."""

import pytest
import torch

from deltainv.kernels.precision import PRECISIONS, UNIT_ROUNDOFF, check_precision, matmul, round_operand, round_tf32


def test_vocabulary_is_the_documented_one():
    assert PRECISIONS == ("fp32", "tf32", "tf32x3", "fp16", "bf16")
    assert set(UNIT_ROUNDOFF) == set(PRECISIONS)


def test_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="fp32, tf32, tf32x3, fp16, bf16"):
        check_precision("fp8")
    with pytest.raises(ValueError, match="unknown precision"):
        round_operand(torch.ones(2), "ieee")


def test_round_tf32_keeps_ten_mantissa_bits_ties_away():
    one = 1.0
    ulp = 2.0**-10
    x = torch.tensor([one, one + ulp, one + ulp / 2, one + ulp / 4, -(one + ulp / 2), one + 3 * ulp / 2], dtype=torch.float32)
    got = round_tf32(x)
    want = torch.tensor([one, one + ulp, one + ulp, one, -(one + ulp), one + 2 * ulp], dtype=torch.float32)
    assert torch.equal(got, want)
    r = round_tf32(torch.randn(1000))
    assert torch.all(r.view(torch.int32) & 0x1FFF == 0)


def test_round_tf32_passes_non_finite_and_overflows_to_inf():
    x = torch.tensor([float("inf"), float("-inf"), float("nan"), torch.finfo(torch.float32).max])
    r = round_tf32(x)
    assert r[0] == float("inf") and r[1] == float("-inf") and torch.isnan(r[2])
    assert r[3] == float("inf")
    with pytest.raises(TypeError):
        round_tf32(torch.ones(2, dtype=torch.float64))


def test_fp16_operands_overflow_like_hardware():
    assert torch.isinf(round_operand(torch.tensor([70000.0]), "fp16")).all()
    assert round_operand(torch.tensor([65504.0]), "fp16").item() == 65504.0
    assert torch.isfinite(round_operand(torch.tensor([70000.0]), "bf16")).all()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_matmul_error_matches_operand_roundoff(precision, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(64, 64, 64, generator=g)
    b = torch.randn(64, 64, 64, generator=g)
    exact = a.double() @ b.double()
    got = matmul(a, b, precision).double()
    scale = (a.double().abs() @ b.double().abs())
    err = ((got - exact).abs() / scale).max().item()
    u = UNIT_ROUNDOFF[precision]
    # Two operand roundings per term plus fp32 accumulation over K = 64.
    assert err <= 2.5 * u + 64 * 2.0**-24
    if precision in ("tf32", "fp16", "bf16"):
        assert err >= 0.1 * u, "operands were not rounded"


def test_tf32x3_is_near_fp32_and_far_better_than_tf32(seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(32, 32, generator=g), torch.randn(32, 32, generator=g)
    exact = a.double() @ b.double()
    e3 = (matmul(a, b, "tf32x3").double() - exact).abs().max()
    e1 = (matmul(a, b, "tf32").double() - exact).abs().max()
    e32 = (matmul(a, b, "fp32").double() - exact).abs().max()
    assert e3 < e1 / 100
    assert e3 < 20 * e32 + 1e-6
