"""The CPU-side cost proxy compiles real kernels for sm_90 on a CPU box (Triton ships ptxas and cuobjdump)."""

import json
import os
import subprocess
import sys

import pytest

from deltainv.bench.compile_time import Config, model_us, ptxas_stats, sass_counts


def test_compiles_a_bt16_slice_for_hopper_and_counts_its_sass(tmp_path):
    # Not under the interpreter: there @triton.jit gives interpreted functions, with nothing to compile.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # --update keeps an earlier run's rows of other (kernel, BT) pairs and replaces those compiled
    old = {k: 1 for k in ("bt", "warps", "chunks_per_program", "registers", "spill_bytes", "seconds",
                          "mma_per_chunk", "warp_instructions_per_chunk", "predicted_us", "floor_us")}
    earlier = [{**old, "kernel": "gdn_intra", "method": "substitution", "precisions": "a:b:c:d", "default": False},
               {**old, "kernel": "solve_tril", "method": "mxr", "precisions": "a:b:c", "default": False, "bt": 16},
               {**old, "kernel": "solve_tril", "method": "mxr", "precisions": "a:b:c", "default": False, "bt": 32}]
    (tmp_path / "compile_time.json").write_text(json.dumps({"meta": {"command": "earlier run"}, "rows": earlier}))
    proc = subprocess.run([sys.executable, "-m", "deltainv.bench.compile_time", "--kernels", "solve_tril",
                           "--bt", "16", "--methods", "substitution,blocked", "--out", str(tmp_path), "--update"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "compile_time.json").read_text())["rows"]
    assert [r for r in rows if r["command"] == "earlier run"] == [{"command": "earlier run", **earlier[i]} for i in (2, 0)]
    assert "`earlier run`" in (tmp_path / "compile_time.md").read_text()
    rows = [r for r in rows if r["command"] != "earlier run"]
    fields = {"kernel", "bt", "warps", "chunks_per_program", "precisions", "registers", "spill_bytes", "seconds",
              "mma_per_chunk", "warp_instructions_per_chunk", "predicted_us", "floor_us", "default"}
    assert rows and all(fields <= set(r) for r in rows)
    assert {r["method"] for r in rows} == {"substitution", "blocked"} and {r["bt"] for r in rows} == {16}
    for r in rows:
        assert r["seconds"] > 0 and 0 < r["registers"] <= 255 and r["spill_bytes"] >= 0
        assert r["warp_instructions_per_chunk"] > 100 and r["predicted_us"] > 0 and r["floor_us"] > 0
    by = {r["method"]: r for r in rows}
    # BT = 16 substitution is pure fp32 forward substitution (no products); blocked doubles on tensor cores
    assert by["substitution"]["mma_per_chunk"] == 0 and by["blocked"]["mma_per_chunk"] > 0
    assert [r["default"] for r in rows if r["method"] == "substitution"] == [True] * 2
    assert "| solve_tril | blocked | 16 |" in (tmp_path / "compile_time.md").read_text()


def test_sass_counting_weights_loops_by_their_trips():
    sass = "\n".join([
        "        /*0000*/                   LDG.E R2, desc[UR4][R2.64] ;",
        "        /*0010*/                   HMMA.1688.F32.TF32 R4, R8, R12, R4 ;",
        "        /*0020*/                   FADD R5, R5, R6 ;",
        "        /*0030*/               @P0 BRA 0x10 ;",
        "        /*0040*/                   EXIT ;",
        "        /*0050*/                   BRA 0x50;",
        "        /*0060*/                   NOP;",
    ])
    assert sass_counts(sass, trips=1) == {"total": 6, "mma": 1}
    assert sass_counts(sass, trips=4) == {"total": 15, "mma": 4}  # HMMA, FADD, BRA x4


def test_sass_counting_multiplies_nested_loop_trips():
    sass = "\n".join([
        "        /*0000*/                   LDG.E R2, desc[UR4][R2.64] ;",
        "        /*0010*/                   HMMA.1688.F32.TF32 R4, R8, R12, R4 ;",  # inner loop
        "        /*0020*/               @P1 BRA 0x10 ;",
        "        /*0030*/                   FADD R5, R5, R6 ;",  # outer loop only
        "        /*0040*/               @P0 BRA 0x10 ;",
        "        /*0050*/                   EXIT ;",
    ])
    # outer loop 2 trips, inner 8 per outer trip: HMMA and its BRA 16x, FADD and the outer BRA 2x
    assert sass_counts(sass, trips=(2, 8)) == {"total": 1 + 16 + 16 + 2 + 2 + 1, "mma": 16}
    with pytest.raises(ValueError, match="depth 2"):
        sass_counts(sass, trips=(2,))
    # an inner loop ptxas unrolled is straight-line code of the outer loop
    unrolled = "\n".join(line for line in sass.split("\n") if "BRA 0x10 ;" not in line or "@P0" in line)
    assert sass_counts(unrolled, trips=(2, 8)) == {"total": 1 + 2 + 2 + 2 + 1, "mma": 2}


def test_issue_bound_model_matches_the_h100_calibration():
    # mxr, one chunk per program, 17.1k warp-instructions per chunk: 134-151 us predicted, 141 us measured
    predicted, floor = model_us(Config("solve_tril", "mxr", 64, 1, 4, "tf32"), 17_120)
    assert 130 <= predicted <= 155 and 60 <= floor <= 75


def test_ptxas_report_is_parsed():
    log = ("ptxas-blackwell info    : Function properties for mxr_bt128_kernel\n"
           "    7824 bytes stack frame, 16664 bytes spill stores, 24576 bytes spill loads\n"
           "ptxas-blackwell info    : Used 32 registers, used 1 barriers, 7824 bytes cumulative stack size\n")
    assert ptxas_stats(log) == {"registers": 32, "spill_stores": 16664, "spill_loads": 24576}
    assert ptxas_stats("") == {"registers": -1, "spill_stores": -1, "spill_loads": -1}


def test_fused_dplr_configs_and_model():
    from deltainv.bench.compile_time import configs, is_default

    todo = configs("dplr_intra", [64, 128], ["substitution", "blocked"])
    assert {c.kernel for c in todo} == {"dplr_intra"} and {c.bt for c in todo} == {64}   # BT 128 is refused
    subst = {c.precisions for c in todo if c.method == "substitution"}
    assert subst == {f"tf32x3:tf32x3:tf32x3:{wu}:{a}" for wu in ("bf16", "tf32x3") for a in ("tf32x3", "tf32")}
    assert [c.precisions for c in todo if is_default(c)] == ["tf32x3:tf32x3:tf32x3:bf16:tf32x3"] * 2
    predicted, floor = model_us(todo[0], 10_000)
    assert predicted > 0 and floor > 0


def test_kda_intra_configs_and_a_partial_update(tmp_path, monkeypatch):
    """The fused KDA configs (chunk sizes up to 64, A products in tf32 and tf32x3), and ``--update``
    with ``--precisions`` keeping every other kernel's rows (the compile itself is stubbed: minutes per config)."""
    from deltainv.bench import compile_time

    cfgs = compile_time.configs("kda_intra", [64, 128], ["substitution", "mxr"])
    assert cfgs and {(c.kernel, c.bt) for c in cfgs} == {("kda_intra", 64)}
    assert {c.precisions.split(":")[-1] for c in cfgs} == {"tf32", "tf32x3"}
    assert sum(compile_time.is_default(c) for c in cfgs) == 2  # the default recipe at its two (NC, warps)
    predicted, floor = model_us(cfgs[0], 10_000)
    assert predicted > 0 and floor > 300  # B1 T16k, 32 heads, d 128: > 1 GB moved
    keep = {"kernel": "solve_tril", "method": "mxr", "bt": 16, "chunks_per_program": 4, "warps": 4,
            "precisions": "tf32x3:tf32x3:tf32x3", "seconds": 1.0, "registers": 100, "spill_bytes": 0,
            "mma_per_chunk": 1, "warp_instructions_per_chunk": 1000, "predicted_us": 1.0, "floor_us": 1.0,
            "default": False}
    (tmp_path / "compile_time.json").write_text(json.dumps({"meta": {"command": "before"}, "rows": [keep]}))
    fake = {"seconds": 2.0, "registers": 200, "spill_bytes": 0, "mma_per_chunk": 10,
            "warp_instructions_per_chunk": 5000}
    monkeypatch.setattr(compile_time, "compile_config", lambda c, arch=90: dict(fake))
    want = [c for c in cfgs if compile_time.is_default(c)]
    assert compile_time.main(["--kernels", "kda_intra", "--bt", "64", "--methods", want[0].method, "--out",
                              str(tmp_path), "--update", "--precisions", want[0].precisions]) == 0
    rows = json.loads((tmp_path / "compile_time.json").read_text())["rows"]
    assert rows[0]["kernel"] == "solve_tril" and rows[0]["warp_instructions_per_chunk"] == 1000
    assert [(r["kernel"], r["precisions"], r["default"]) for r in rows[1:]] == [("kda_intra", want[0].precisions, True)] * 2
