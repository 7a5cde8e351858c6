"""The benchmark runs end to end at toy size (CPU: under the Triton interpreter) and writes its outputs."""

import json

import pytest

from deltainv.bench import tril_bench


@pytest.mark.slow
def test_toy_run_writes_json_markdown_and_png(tmp_path):
    assert tril_bench.main(["--toy", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "tril_bench.json").read_text())
    parts = {p["part"] for p in data["points"]}
    assert parts == {"solve_tril", "intra", "forward"}
    impls = {p["impl"] for p in data["points"]}
    assert {"fla/ieee", "fla/tf32", "torch.solve_triangular", "deltainv mxr_refine/tf32+x3",
            "fla fused kkt+solve+w/u", "deltainv mxr_refine mixed", "fla stock", "fla + deltainv mxr_refine mixed"} <= impls
    for p in data["points"]:
        assert p["ms"] > 0 and p["gbps"] > 0 and p["speedup"] > 0
        assert p["rel_err"] is not None and p["rel_err"] < 1e-1, p
    # the stable fp32 paths stay at fp32 accuracy even in the toy
    errs = {(p["shape"], p["impl"]): p["rel_err"] for p in data["points"] if p["part"] == "solve_tril"}
    assert all(v < 1e-6 for (s, i), v in errs.items() if i in ("fla/ieee", "deltainv mxr_refine/fp32"))
    for key in ("device_name", "torch", "triton", "fla", "copy_gbps"):
        assert data["meta"][key]
    md = (tmp_path / "tril_bench.md").read_text()
    assert "## solve_tril" in md and "## intra" in md and "## forward" in md
    assert (tmp_path / "tril_bench.png").read_bytes()[:4] == b"\x89PNG"
