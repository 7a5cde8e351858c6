"""SGLang 0.5.23 in its own virtual environment (its torch 2.14.1 pin clashes with ours).

PyPI SGLang cannot serve on a CPU (model init imports ``vllm._custom_ops``), so the test does what
``python -m sglang.launch_server`` does before serving, with the command line of ``docs/plugin.md``
("Use with SGLang"): ``load_plugins()`` (the ``sglang.srt.plugins`` entry point) and
``prepare_server_args``. Then it calls SGLang's GDN chunk entry on CPU tensors under the Triton
interpreter (SGLang's other Triton kernels interpreted, deltainv's intra function in PyTorch) and
compares it with SGLang's own fused kernel, a float64 recurrence, and the unstable canary.
"""

from __future__ import annotations

import json
import shlex

import pytest

from plugin_testing import clean_env, doc_command, run_script, venv_python

pytestmark = pytest.mark.slow
TARGET = "sglang.kernels.ops.attention.fla.chunk_fwd.chunk_gated_delta_rule_fwd_intra"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    python = venv_python(".venv-sglang")
    work = tmp_path_factory.mktemp("sglang")
    model = work / "tiny-qwen3-next"
    made = run_script(python, "tiny_models.py", "qwen3_next", str(model), cwd=work)
    assert made.returncode == 0, made.stderr[-3000:]
    exports, command = doc_command("sglang-serve", "python -m sglang.launch_server")
    args = shlex.split(command.replace('"$MODEL"', str(model)))[3:]
    out = work / "report.json"
    proc = run_script(python, "sglang_check.py", str(out), "20261122", *args, cwd=work,
                      env=clean_env(TRITON_INTERPRET="1", **exports))
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    data["exports"], data["stderr"] = exports, proc.stderr
    return data


def test_plugin_loads_through_sglang_plugins_without_importing_the_kernels(report):
    loaded = report["loaded"]
    assert loaded["active"] and loaded["method"] == report["exports"]["DELTAINV_METHOD"]
    assert TARGET in loaded["waiting"] and not loaded["fla_imported_by_plugin"]
    assert report["linear_attn_prefill_backend"] == "triton"


def test_target_function_is_replaced_where_sglang_calls_it(report):
    assert report["replaced"]["chunk_fwd"] == TARGET
    assert report["replaced"]["chunk"] == TARGET  # chunk.py's `from .chunk_fwd import ...` copy
    assert report["replaced"]["prefill_default"].endswith("flashinfer_gdn_prefill_default")


def test_sglang_gdn_chunk_runs_deltainv_and_matches_the_references(report):
    assert report["interpreter"]
    assert report["counters_deltainv"][TARGET]["calls"] >= 1
    scale = report["max_abs_ref"]
    err = report["err"]
    # bf16 inputs and outputs: deltainv agrees with SGLang's own kernel and with float64 to ~1%.
    assert err["deltainv_vs_sglang"] <= 0.03 * scale, err
    assert err["deltainv_vs_f64"] <= 0.03 * scale, err
    assert err["state_deltainv_vs_f64"] <= 0.05, err
    assert report["restored"]


def test_product_fp16_without_guard_visibly_breaks_the_same_call(report):
    assert report["counters_product"][TARGET]["calls"] >= 1
    assert not report["product_finite"] or report["err"]["product_vs_sglang"] > 0.1
