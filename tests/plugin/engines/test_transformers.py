"""transformers: tiny Qwen3-Next, Qwen3.5 and Kimi Linear on the CPU with fla installed.

Without deltainv these models fail on the CPU once fla is installed (transformers binds fla's
Triton kernels at import, whatever the device). With deltainv active the chunked rule runs
deltainv's PyTorch path and the decode step transformers' own torch recurrence: the forward pass
runs, its fp32 logits match the pure fallback (fla blocked) to 1e-5, and greedy generation gives
the same tokens. Checked in two environments: ``.venv`` (transformers 5.23) and ``.venv-vllm``
(transformers 5.19, the version vLLM pins), both with fla-core 0.6.0.
"""

from __future__ import annotations

import pytest
import torch

from plugin_testing import clean_env, run_script, venv_python

KINDS = ("qwen3_next", "qwen3_5", "kimi_linear")
VENVS = {".venv": "5.23", ".venv-vllm": "5.19"}


@pytest.fixture(scope="module", params=list(VENVS))
def results(request, tmp_path_factory):
    python = venv_python(request.param)
    work = tmp_path_factory.mktemp("tf")
    modes = {
        "fallback": {},
        "plain": {},
        "deltainv": {"DELTAINV_METHOD": "mxr_refine"},
        "canary": {"DELTAINV_METHOD": "product", "DELTAINV_PRECISION": "fp16", "DELTAINV_GUARD": "0"},
    }
    out = {}
    for name, env in modes.items():
        path = work / f"{name}.pt"
        proc = run_script(python, "transformers_forward.py", "deltainv" if name == "canary" else name, str(path),
                          env=clean_env(**env), cwd=work)
        assert proc.returncode == 0, proc.stderr[-4000:]
        out[name] = torch.load(path, weights_only=False)
        out[name]["stderr"] = proc.stderr
    assert out["fallback"]["transformers"].startswith(VENVS[request.param])
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_without_deltainv_fla_breaks_the_cpu_forward(results, kind):
    assert results["plain"][kind]["error"] is not None
    assert "active drivers" in results["plain"][kind]["error"]


@pytest.mark.parametrize("kind", KINDS)
def test_with_deltainv_the_forward_runs_and_matches_the_pure_fallback(results, kind):
    ours, ref = results["deltainv"][kind], results["fallback"][kind]
    assert ours["error"] is None and ref["error"] is None, (ours["error"], ref["error"])
    assert ours["logits"].dtype == torch.float32
    torch.testing.assert_close(ours["logits"], ref["logits"], atol=1e-5, rtol=1e-5)
    assert ours["generated"] == ref["generated"]


def test_deltainv_ran_its_own_code_for_every_model(results):
    status = results["deltainv"]["status"]
    patched = {r["target"]: r for r in status["patched"]}
    for kind, fn in (("qwen3_next", "torch_chunk_gated_delta_rule"), ("qwen3_5", "torch_chunk_gated_delta_rule"),
                     ("kimi_linear", "chunk_kimi_delta_attention")):
        key = f"transformers.models.{kind}.modeling_{kind}.{fn}"
        assert patched[key]["method"] == "mxr_refine" and patched[key]["bound_to_fla"] is True
        counters = status["counters"][key]
        assert counters["calls"] >= 1 and counters.get("original_calls", 0) == 0
        assert counters["guard_checked"] == counters["calls"]
    assert status["guard_fallbacks"] == 0
    from deltainv.kernels.registry import DEFAULT_PRECISION  # DELTAINV_PRECISION unset: the default

    assert f"running deltainv (method=mxr_refine precision={DEFAULT_PRECISION}" in results["deltainv"]["stderr"]


@pytest.mark.parametrize("kind", KINDS)
def test_product_fp16_without_guard_breaks_the_logits(results, kind):
    # The canary: the same path with the unstable method must be visibly wrong, so the
    # comparison above really sees deltainv's inverse.
    bad = results["canary"][kind]["logits"]
    ref = results["fallback"][kind]["logits"]
    assert not torch.isfinite(bad).all() or (bad - ref).abs().max() > 1e-2
