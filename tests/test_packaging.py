"""The installed distribution: import names under deltainv.*, the console script, no stray modules."""

import subprocess
import sys
from pathlib import Path

DELTAINV = str(Path(sys.executable).with_name("deltainv"))


def _run(code: str, cwd="/"):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_console_script_and_version():
    proc = subprocess.run([DELTAINV, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("deltainv ")
    proc = subprocess.run([DELTAINV], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "numerics" in proc.stdout


def test_no_top_level_kernels_models_or_eval_module():
    # `kernels` is a real package transformers imports; ours must only exist as deltainv.kernels.
    proc = _run("import importlib.util as u; print([u.find_spec(m) for m in ('kernels', 'models', 'eval', 'plugin')])")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[None, None, None, None]"
    proc = _run("import deltainv.kernels, deltainv.eval, deltainv.plugin, deltainv.models, deltainv.bench; print('ok')")
    assert proc.stdout.strip() == "ok", proc.stderr


def test_importing_the_library_does_not_import_triton_or_touch_a_gpu():
    proc = _run("import sys, deltainv.kernels as k; k.METHODS['mxr']; print('triton' in sys.modules, 'torch.cuda' in sys.modules and __import__('torch').cuda.is_initialized())")
    assert proc.stdout.strip() == "False False", proc.stdout + proc.stderr
