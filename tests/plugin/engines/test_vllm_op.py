"""vLLM 0.32's GDN custom op replaced out of tree (``CustomOp.register_oot``), at function level in .venv-vllm.

``tests/plugin/scripts/vllm_op_check.py`` installs deltainv, builds the op the way vLLM's GDN layer
does (``ChunkGatedDeltaRule()`` under ``set_current_vllm_config``) and calls it on CPU tensors under
the Triton interpreter: vLLM's own vendored FLA kernels run interpreted, with deltainv's fused intra
in place of kkt + solve_tril + recompute_w_u. It is compared with vLLM's own chunked rule (the same
kernels, stock, after ``uninstall``) and a float64 recurrence, for fixed-length and varlen inputs with
grouped heads (2 key heads, 4 value heads). The server test (``test_vllm.py``) covers the CPU build's
live path, which runs the C++ kernel hook, not this op.
"""

from __future__ import annotations

import json

import pytest

from plugin_testing import clean_env, run_script, venv_python

pytestmark = pytest.mark.slow
KEY = "vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn.ChunkGatedDeltaRule"


@pytest.fixture(scope="module")
def report(tmp_path_factory, request):
    python = venv_python(".venv-vllm")
    work = tmp_path_factory.mktemp("vllm-op")
    out = work / "report.json"
    seed = 20261202
    proc = run_script(python, "vllm_op_check.py", str(out), str(seed), str(work), "mxr_refine", "fp32", cwd=work,
                      env=clean_env(TRITON_INTERPRET="1"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    data["stderr"] = proc.stderr
    return data


def test_vllm_instantiates_deltainv_op_through_its_custom_op_registry(report):
    assert report["waiting_before_import"]              # nothing of vLLM imported by install()
    assert KEY in report["patched"]
    assert report["op_class"] == "deltainv.plugin.engines.vllm.ChunkGatedDeltaRule"
    assert report["registered"] == "deltainv.plugin.engines.vllm"
    assert report["is_vllm_subclass"] and report["layer_module_class_untouched"]
    assert report["forward_method"] == "forward_deltainv"
    # uninstall withdraws the registration (and the solve_tril patch): vLLM builds its own op again
    assert report["after_uninstall"] == {
        "op_class": "vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn.ChunkGatedDeltaRule",
        "registered": False, "solve_tril_restored": True}


@pytest.mark.parametrize("name", ["fixed", "varlen"])
def test_op_forward_matches_vllm_own_chunked_rule_and_float64(report, name):
    case = report["cases"][name]
    assert case["calls"] == 1  # deltainv's intra ran inside the op, under the op's key
    assert case["shapes"] == case["vllm_shapes"] and case["dtypes"] == case["vllm_dtypes"]
    assert case["finite"]
    # bf16 inputs, output and intermediate W/U: agreement to bf16 level, and no worse than vLLM's own
    assert case["o_vs_vllm"] < 0.02 and case["state_vs_vllm"] < 0.02, case
    assert case["o_vs_f64"] <= 1.25 * case["vllm_o_vs_f64"] + 1e-3, case
    assert case["state_vs_f64"] <= 1.25 * case["vllm_state_vs_f64"] + 1e-3, case
    if name == "varlen":
        assert case["buffer_holds_o"]  # vLLM's core_attn_out contract: the output is written into its buffer


def test_a_call_vllm_refuses_goes_to_vllm_own_method(report):
    assert "does not support float32" in report["fp32_error"]
    assert report["counters"] == {"calls": 2, "original_calls": 1, "guard_checked": 2}


def test_the_log_says_which_path_runs(report):
    err = report["stderr"]
    assert f"running deltainv (method=mxr_refine precision=fp32, guard=on) from {KEY}" in err
    # on the CPU build the layers call the C++ kernel hook, not this op: said once
    assert err.count("forward_cpu runs vllm._custom_ops.chunk_gated_delta_rule_cpu") == 1
