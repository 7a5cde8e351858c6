"""fla 0.6.0's backend dispatch: FlashQLA would take ``chunk_gated_delta_rule`` whole, bypassing the
intra function deltainv patches; with deltainv active, fla's own dispatch routes the call back to
its Triton path.

FlashQLA (TileLang, SM90+) cannot run here. The tests make fla's registry see it as usable the way a
GPU machine with ``flash_qla`` installed does: a stand-in ``flash_qla`` package on ``sys.path``
(``find_spec`` finds it, as fla's ``is_available`` asks) that records its calls, and fla's Hopper
flag set in the backend module. Everything else is fla's real dispatch: its registry, its
``FlashQLABackend`` verifier (patched by deltainv), its logging and its Triton fallback, which runs
under the Triton interpreter with deltainv's intra function in place.
"""

from __future__ import annotations

import logging
import sys
import textwrap

import pytest
import torch

import deltainv.plugin as plugin
from deltainv.kernels.gdn import naive_recurrent_gated_delta_rule
from deltainv.plugin import Settings

INTRA = "fla.ops.gated_delta_rule.chunk_fwd.chunk_gated_delta_rule_fwd_intra"
VERIFIER = "fla.ops.gated_delta_rule.backends.flash_qla.FlashQLABackend.chunk_gated_delta_rule_verifier"

_STAND_IN = '''
"""Stand-in for the flash_qla package (TileLang kernels need an SM90+ GPU): records its calls."""
import torch
calls = []

def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False, **kwargs):
    calls.append(tuple(q.shape))
    return torch.zeros_like(v), None
'''


@pytest.fixture
def flash_qla(tmp_path, monkeypatch):
    """fla sees FlashQLA as installed on a Hopper GPU; yields the stand-in module."""
    (tmp_path / "flash_qla").mkdir()
    (tmp_path / "flash_qla" / "__init__.py").write_text(textwrap.dedent(_STAND_IN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("FLA_FLASH_QLA", raising=False)
    import fla.ops.gated_delta_rule.chunk as chunk  # imports fla's GDN backends (the dispatch loads them)
    from fla.utils import find_spec_cached

    # fla caches find_spec per process: an earlier fla call in this process saw no flash_qla.
    find_spec_cached.cache_clear()
    backend_module = sys.modules["fla.ops.gated_delta_rule.backends.flash_qla"]
    monkeypatch.setattr(backend_module, "IS_NVIDIA_HOPPER", True)
    import flash_qla
    from fla.backends import _operation_registries

    _operation_registries["gated_delta_rule"]._logged.clear()  # fla logs each backend decision once per process
    intra = chunk.chunk_gated_delta_rule_fwd_intra
    verifier = backend_module.FlashQLABackend.chunk_gated_delta_rule_verifier
    yield flash_qla
    plugin.uninstall()
    assert backend_module.FlashQLABackend.chunk_gated_delta_rule_verifier is verifier
    assert chunk.chunk_gated_delta_rule_fwd_intra is intra
    sys.modules.pop("flash_qla", None)
    find_spec_cached.cache_clear()  # later tests must not see the stand-in


def _inputs(seed: int, T: int = 80, H: int = 1, K: int = 128):
    """FlashQLA's shape class (K = V = 128, bf16) with a partial last chunk; ln gates."""
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.nn.functional.normalize(torch.randn(1, T, H, K, generator=gen), dim=-1) for _ in range(2))
    v = torch.randn(1, T, H, K, generator=gen)
    g = -torch.rand(1, T, H, generator=gen) * 0.3
    beta = torch.rand(1, T, H, generator=gen) * 0.5 + 0.25
    return tuple(x.to(torch.bfloat16) for x in (q, k, v)) + (g, beta.to(torch.bfloat16))


def _call(inputs):
    from fla.ops.gated_delta_rule.chunk import chunk_gated_delta_rule

    q, k, v, g, beta = inputs
    return chunk_gated_delta_rule(q, k, v, g, beta, output_final_state=True)


def test_flash_qla_takes_the_call_without_deltainv(flash_qla, seed):
    o, _ = _call(_inputs(seed))
    assert flash_qla.calls == [(1, 80, 1, 128)]  # fla's dispatch bypassed its Triton path (and the intra)
    assert not o.any()


def test_deltainv_routes_the_dispatch_back_to_the_patched_triton_path(flash_qla, seed, caplog):
    inputs = _inputs(seed)
    status = plugin.install(Settings(method="mxr_refine", precision="fp32", targets=frozenset({"fla"})))
    assert VERIFIER in [r["target"] for r in status["patched"]]
    with caplog.at_level(logging.INFO, logger="fla.backends"):
        o, state = _call(inputs)
    assert flash_qla.calls == []
    assert plugin.status()["counters"][INTRA]["calls"] == 1
    assert any("flash_qla rejected: deltainv is active" in r.getMessage() for r in caplog.records)
    q, k, v, g, beta = inputs
    o64, s64 = naive_recurrent_gated_delta_rule(q, k, v, g, beta)
    err = (o.double() - o64).abs().max() / o64.abs().max()
    assert err < 0.02, err.item()  # bf16 inputs and output
    assert (state.double() - s64).abs().max() / s64.abs().max() < 0.02


def test_force_triton_off_keeps_flash_qla_and_warns(flash_qla, seed, caplog):
    plugin.install(Settings(method="mxr_refine", targets=frozenset({"fla"}), force_triton=False))
    logging.getLogger("deltainv").addHandler(caplog.handler)  # deltainv's logger does not propagate
    try:
        _call(_inputs(seed))
    finally:
        logging.getLogger("deltainv").removeHandler(caplog.handler)
    assert len(flash_qla.calls) == 1
    assert any(r.levelname == "WARNING" and "will NOT run" in r.getMessage() for r in caplog.records)
    assert INTRA not in plugin.status()["counters"]
