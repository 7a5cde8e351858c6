"""The GPU branch of assert_kernel_close, exercised on the CPU so that it is known to fail when it should."""

import pytest
import torch

from support import device


def test_gpu_branch_accepts_reference_grade_error_and_rejects_a_wrong_element(monkeypatch):
    monkeypatch.setattr(device, "INTERPRETED", False)
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(64, 64, generator=g, dtype=torch.float64)
    ref = truth.float()
    noisy = (truth + 1e-7 * torch.randn(64, 64, generator=g, dtype=torch.float64)).float()
    device.assert_kernel_close(noisy, ref, truth, atol=0)
    bad = noisy.clone()
    bad[3, 5] += 1e-2
    with pytest.raises(AssertionError, match="error vs float64"):
        device.assert_kernel_close(bad, ref, truth, atol=0)
    bad[3, 5] = float("nan")
    with pytest.raises(AssertionError, match="unwritten"):
        device.assert_kernel_close(bad, ref, truth, atol=0)
