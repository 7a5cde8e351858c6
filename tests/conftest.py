"""Shared test support.

Random inputs are fresh on every run: the session seed comes from ``DELTAINV_TEST_SEED`` or is
drawn at start-up, and is printed in the pytest header so any failure can be replayed with
``DELTAINV_TEST_SEED=<seed> pytest ...``.
"""

from __future__ import annotations

import os
import random
import zlib

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None)
settings.register_profile("deep", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_SEED = int(os.environ.get("DELTAINV_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_report_header(config):
    return f"deltainv: DELTAINV_TEST_SEED={_SEED} (set it to replay this run's random inputs)"


@pytest.fixture
def seed(request) -> int:
    """A per-test seed derived from the session seed and the test's id."""
    # crc32, not hash(): str hashes change between processes and would break replay.
    return (_SEED + zlib.crc32(request.node.nodeid.encode())) % 2**31


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(min(2, os.cpu_count() or 1))
