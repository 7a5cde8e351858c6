"""deltainv's KDA intra targets against each engine's own ``chunk_kda_fwd_intra``, at function level.

For fla 0.6.0 (``.venv``), vLLM's Kimi Linear copy (``.venv-vllm``) and SGLang 0.5.23
(``.venv-sglang``): the engine's function runs on CPU tensors under the Triton interpreter; then
deltainv is installed for that engine only and the name the engine's caller uses is called with
the same inputs (``tests/plugin/scripts/kda_intra_check.py``). The results must agree with the
engine's to the interpreter's tf32 rounding, in the engine's exact return layout; a wrong but
finite inverse (Newton-Schulz, 2 iterations, guard off) must change them, which proves the call
ran deltainv's inverse; uninstalling restores the engine's function.
"""

from __future__ import annotations

import pytest
import torch

from deltainv.kernels import dropin
from deltainv.plugin.targets import TARGETS
from plugin_testing import clean_env, run_script, venv_python

pytestmark = pytest.mark.slow

VENVS = {"fla": ".venv", "vllm": ".venv-vllm", "sglang": ".venv-sglang"}
#: Position of Akk (the inverse) and of the outputs that depend on it, per contract.
LAYOUT = {
    "fla": ("w", "u", "qg", "kg", "Aqk", "Akk"),
    "sglang": ("w", "u", "qg", "kg", "Aqk", "Akk"),
    "vllm": ("Aqk", "Akk"),
}


def _chunk_lower(cu, T, BT):
    """``[1, T, 1, BT]``: (t, j) lies on or below the diagonal of t's chunk."""
    pos = torch.zeros(T, dtype=torch.long)
    for s, e in zip(cu.tolist(), cu.tolist()[1:]):
        pos[s:e] = torch.arange(e - s) % BT
    return (torch.arange(BT)[None, :] <= pos[:, None])[None, :, None, :]


@pytest.fixture(scope="module", params=list(VENVS))
def result(request, tmp_path_factory):
    engine = request.param
    python = venv_python(VENVS[engine])
    work = tmp_path_factory.mktemp(f"kda-{engine}")
    out = work / "out.pt"
    proc = run_script(python, "kda_intra_check.py", engine, str(out), "7", cwd=work,
                      env=clean_env(TRITON_INTERPRET="1", VLLM_KIMI_K3_GEMM_AR="0", OMP_NUM_THREADS="1"),
                      timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out, weights_only=False)


def test_targets_declare_the_engines_exact_parameter_lists(result):
    engine = result["engine"]
    assert tuple(result["signature"]) == dropin.KDA_INTRA_PARAMS[engine]
    kda = [t for t in TARGETS if t.rule == "kda" and t.group == engine and t.role == "kernel"]
    assert kda and all(t.params == dropin.KDA_INTRA_PARAMS[engine] for t in kda)


def test_patched_function_matches_the_engines_own(result):
    """Against the engine's own function where it runs on a CPU under the interpreter (fla, SGLang).
    vLLM's CPU build disables Triton (its kernels become placeholders), so there the patched call is
    checked against deltainv's reference intra (itself checked against fla's kernel,
    tests/kernels/kda/test_intra.py), and the failure of vLLM's own function is asserted."""
    engine, theirs, ours = result["engine"], result["theirs"], result["ours"]
    if engine == "vllm":
        assert theirs is None and "not subscriptable" in result["why_not"], result["why_not"]
        theirs = result["reference"]
    status = result["ours_status"]
    assert status["replaced"] and result["restored"]
    key = next(k for k in status["patched"] if k.endswith("chunk_kda_fwd_intra"))
    assert status["counters"][key]["calls"] == 1 and status["counters"][key].get("original_calls", 0) == 0
    assert len(ours) == len(theirs) == len(LAYOUT[engine])
    for name, a, b in zip(LAYOUT[engine], ours, theirs):
        if b is None:
            assert a is None, name
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, (name, a.shape, b.shape)
        if name == "Aqk":  # engines leave the part above each chunk's diagonal unset (torch.empty)
            lower = _chunk_lower(result["inputs"]["cu_seqlens"], a.shape[1], a.shape[-1])
            a, b = torch.where(lower, a, 0.0), torch.where(lower, b, 0.0)
        torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3, msg=f"{engine} {name}")


def test_a_wrong_inverse_changes_the_result(result):
    engine, theirs, wrong = result["engine"], result["theirs"] or result["reference"], result["wrong"]
    i = LAYOUT[engine].index("Akk")
    assert torch.isfinite(wrong[i]).all()
    assert (wrong[i].float() - theirs[i].float()).abs().max() > 1e-2
