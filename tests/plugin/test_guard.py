"""The guard: what it recomputes with, and that its log line tells the truth about the inputs."""

from __future__ import annotations

import logging

import pytest
import torch

from deltainv.kernels import dropin
from deltainv.kernels import solve_tril as reference_solve_tril
from deltainv.kernels.inputs import engine_layout
from deltainv.plugin import Settings
from deltainv.plugin.engines import itself, kernel
from deltainv.plugin.guard import guarded, nonfinite_inputs, reset_counters, snapshot_counters
from deltainv.plugin.log import logger, reset_once

KEY = "test.solve_tril"


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(f"{record.levelname}: {record.getMessage()}")


@pytest.fixture
def log():
    reset_once()
    reset_counters()
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)
    reset_counters()
    reset_once()


def _unstable():
    """The product form in fp16: overflows on all-ones chunks although they are finite."""
    return dropin.solve_tril("product", "fp16", backend="torch")


def _stable():
    return dropin.solve_tril("substitution", "fp32", backend="torch")


def test_finite_inputs_are_reported_finite_and_the_stable_result_returned(log):
    A = engine_layout("all_ones", 1, 128, 2, 64)
    assert not torch.isfinite(_unstable()(A)).all()
    fn = guarded(KEY, _unstable(), _stable(), itself, describe="method=product precision=fp16")
    X = fn(A)
    assert torch.equal(X, reference_solve_tril(A, method="substitution", precision="fp32"))
    assert snapshot_counters()[KEY] == {"guard_checked": 1, "guard_recomputed": 1}
    [line] = log
    assert line.startswith(f"WARNING: non-finite result in {KEY} (") and "all inputs finite" in line
    assert "inputs themselves are not finite" not in " ".join(log)


def test_non_finite_inputs_are_named_and_not_blamed_on_the_method(log):
    A = engine_layout("gdn", 1, 128, 2, 64)
    A[0, 70, 1, 3] = float("nan")
    fn = guarded(KEY, _stable(), _stable(), itself, engine=lambda *a, **k: pytest.fail("engine must not run"))
    X = fn(A)
    assert torch.isnan(X).any()
    assert snapshot_counters()[KEY] == {"guard_checked": 1, "guard_recomputed": 1, "guard_still_nonfinite": 1}
    assert "non-finite inputs: A (1 values)" in log[0]
    assert "the inputs hold non-finite values (A (1 values))" in log[1]


def test_still_non_finite_with_finite_inputs_runs_the_engine_function(log):
    """A stable path that fails on finite inputs is a deltainv defect: the engine's own function answers."""
    A = engine_layout("all_ones", 1, 128, 2, 64)
    engine = dropin.solve_tril("torch", backend="torch")
    fn = guarded(KEY, _unstable(), _unstable(), itself, engine=engine)
    X = fn(A)
    assert torch.equal(X, engine(A))
    assert snapshot_counters()[KEY] == {"guard_checked": 1, "guard_recomputed": 1, "guard_still_nonfinite": 1,
                                        "guard_engine_fallback": 1}
    assert "all inputs finite" in log[0] and "runs the engine's own function" in log[1]


def test_the_stable_recompute_runs_on_the_pytorch_backend():
    """Whatever DELTAINV_BACKEND says, the guard's recompute does not go through the Triton kernel."""
    for backend in ("auto", "triton"):
        built = kernel(dropin.solve_tril, Settings(method="mxr", backend=backend), pick=itself, with_backend=True)
        assert built.fast.deltainv["backend"] == backend
        assert built.stable.deltainv == {"method": "substitution", "precision": "fp32", "backend": "torch"}


def test_nonfinite_inputs_names_keyword_and_positional_tensors():
    def f(k, v, g=None, beta=None):
        return k

    k, v = torch.zeros(3), torch.tensor([1.0, float("inf"), float("nan")])
    assert nonfinite_inputs(f, (k, v), {"g": torch.zeros(2, dtype=torch.int64), "beta": v}) == [
        "v (2 values)", "beta (2 values)"]
