"""Shared test support.

Random inputs are fresh on every run: the session seed comes from ``DELTAINV_TEST_SEED`` or is
drawn at start-up, and is printed in the pytest header so any failure can be replayed with
``DELTAINV_TEST_SEED=<seed> pytest ...``.

Triton: without a CUDA device the whole session runs Triton kernels (ours and fla's) under the
CPU interpreter (``TRITON_INTERPRET=1`` plus ``tests/support/triton_interpreter.py``), set here
before anything imports a kernel; on a GPU machine the same tests run on CUDA. A test that needs
the plain, un-interpreted CPU behaviour (fla failing with ``0 active drivers``, say) must run it
in a subprocess with ``TRITON_INTERPRET`` removed from the environment.
"""

from __future__ import annotations

import os
import random
import sys
import zlib

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(__file__))
from support import triton_interpreter  # noqa: E402

triton_interpreter.install()

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=40, deadline=None)
settings.register_profile("deep", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_SEED = int(os.environ.get("DELTAINV_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_report_header(config):
    triton = "CUDA" if torch.cuda.is_available() else "CPU interpreter (TRITON_INTERPRET=1)"
    return [f"deltainv: DELTAINV_TEST_SEED={_SEED} (set it to replay this run's random inputs)",
            f"deltainv: Triton kernels run on {triton}"]


@pytest.fixture
def seed(request) -> int:
    """A per-test seed derived from the session seed and the test's id."""
    # crc32, not hash(): str hashes change between processes and would break replay.
    return (_SEED + zlib.crc32(request.node.nodeid.encode())) % 2**31


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(min(2, os.cpu_count() or 1))
