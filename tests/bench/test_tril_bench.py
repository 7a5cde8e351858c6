"""The GPU check and its benchmark parts run end to end at toy size (CPU: under the Triton interpreter)
and write the schema the GPU results keep (``points`` with part, shape, impl, ms, gbps, copy_share,
speedup, rel_err) plus p20/p80, the poisoned-output check and the config that ran."""

import json

import pytest

from deltainv.bench import gpu_check


@pytest.mark.slow
def test_gpu_check_toy_run_writes_every_step(tmp_path):
    assert gpu_check.main(["--toy", "--skip", "tests", "--out", str(tmp_path), "--wheels", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = [s["step"] for s in report["steps"]]
    assert steps[0] == "copy" and steps[-1] == "done" and {"solve_tril", "intra", "forward"} <= set(steps)
    assert report["meta"]["versions"]["torch"] and report["meta"]["toy"] is True
    data = json.loads((tmp_path / "tril_bench.json").read_text())
    assert {p["part"] for p in data["points"]} == {"solve_tril", "intra", "forward"}
    impls = {p["impl"] for p in data["points"]}
    assert {"fla/ieee", "fla/tf32", "torch.solve_triangular", "deltainv substitution/tf32x3 (default)",
            "deltainv blocked/tf32x3", "fla fused kkt+solve+w/u", "fla stock"} <= impls
    assert any("@NC" in i for i in impls), "the BT=64 point pins each (NC, warps) config"
    for p in data["points"]:
        assert {"part", "shape", "impl", "ms", "gbps", "copy_share", "speedup", "rel_err"} <= set(p)
        assert p["ms"] > 0 and p["gbps"] > 0 and p["speedup"] > 0
        assert p["rel_err"] is not None and p["rel_err"] < 1e-1, p
        if p["part"] == "solve_tril":
            assert p["extra"]["p20"] <= p["ms"] <= p["extra"]["p80"]
            if p["impl"].startswith("deltainv"):
                assert p["extra"]["poison_ok"] is True and p["extra"]["config"].startswith("NC=")
    # the default recipe stays at the fla ieee level even in the toy
    errs = {(p["shape"], p["impl"]): p["rel_err"] for p in data["points"] if p["part"] == "solve_tril"}
    for (shape, impl), err in errs.items():
        if impl == "deltainv substitution/tf32x3 (default)" and ("BT32" in shape or "BT64" in shape):
            assert err <= 3 * max(errs[shape, "fla/ieee"], 1e-8), (shape, err)
    md = (tmp_path / "tril_bench.md").read_text()
    assert "## solve_tril" in md and "## intra" in md and "## forward" in md
    assert (tmp_path / "tril_bench.png").read_bytes()[:4] == b"\x89PNG"
