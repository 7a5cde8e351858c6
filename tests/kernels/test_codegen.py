"""Generated Triton modules are up to date with their generator."""

import subprocess
import sys

from deltainv.kernels.codegen import GENERATED


def test_generated_files_are_current():
    for path, build in GENERATED.items():
        assert path.read_text() == build(), f"{path.name} is stale: run python -m deltainv.kernels.codegen"


def test_check_mode_exits_nonzero_on_a_stale_file(tmp_path, monkeypatch):
    proc = subprocess.run([sys.executable, "-m", "deltainv.kernels.codegen", "--check"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from deltainv.kernels import codegen

    target = next(iter(codegen.GENERATED))
    monkeypatch.setitem(codegen.GENERATED, target, lambda: "# something else\n")
    assert codegen.main(["--check"]) == 1
