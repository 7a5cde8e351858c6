"""The compile-time benchmark compiles real kernels for sm_90 on a CPU box (Triton ships ptxas)."""

import json
import os
import subprocess
import sys


def test_compiles_every_bt16_kernel_for_hopper(tmp_path):
    # Not under the interpreter: there @triton.jit gives interpreted functions, with nothing to compile.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-m", "deltainv.bench.compile_time", "--kernels", "bt16_",
                           "--precisions", "fp32:fp32:fp32", "--out", str(tmp_path)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "compile_time.json").read_text())["rows"]
    assert {r["kernel"] for r in rows} == {"substitution_bt16_kernel", "mxr_bt16_kernel", "mxr_refine_bt16_kernel"}
    assert len(rows) == 6 and all(r["seconds"] > 0 and r["ptx_kchars"] > 1 for r in rows)
    # ptxas's own report was read: a real register count, and spills as a number (0 is fine)
    assert all(0 < r["registers"] <= 255 and r["spill_bytes"] >= 0 for r in rows)
    assert all(r["mma_per_warp"] == 0 for r in rows)  # ieee fp32 products run on FMA units, not MMA
    assert "| mxr_refine_bt16_kernel |" in (tmp_path / "compile_time.md").read_text()


def test_ptxas_report_is_parsed():
    from deltainv.bench.compile_time import ptxas_stats

    log = ("ptxas-blackwell info    : Function properties for mxr_bt128_kernel\n"
           "    7824 bytes stack frame, 16664 bytes spill stores, 24576 bytes spill loads\n"
           "ptxas-blackwell info    : Used 32 registers, used 1 barriers, 7824 bytes cumulative stack size\n")
    assert ptxas_stats(log) == {"registers": 32, "spill_stores": 16664, "spill_loads": 24576}
    assert ptxas_stats("") == {"registers": -1, "spill_stores": -1, "spill_loads": -1}
