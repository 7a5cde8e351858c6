"""The engines' plugin entry points resolve through importlib.metadata from the installed package."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from deltainv.plugin import entrypoints
from plugin_testing import clean_env, venv_python

GROUPS = {"vllm.general_plugins": entrypoints.vllm_plugin, "sglang.srt.plugins": entrypoints.sglang_plugin}

_PROBE = """
    import json, sys
    from importlib.metadata import entry_points
    found = {}
    for group in ("vllm.general_plugins", "sglang.srt.plugins"):
        eps = [ep for ep in entry_points(group=group) if ep.name == "deltainv"]
        fn = eps[0].load() if eps else None
        found[group] = [len(eps), getattr(fn, "__module__", None), getattr(fn, "__name__", None),
                        eps[0].dist.name if eps else None]
    print(json.dumps(found))
"""


def test_entry_points_resolve_in_this_environment():
    from importlib.metadata import entry_points

    for group, fn in GROUPS.items():
        (ep,) = [ep for ep in entry_points(group=group) if ep.name == "deltainv"]
        assert ep.load() is fn and ep.dist.name == "deltainv"


@pytest.mark.parametrize("venv", [".venv-vllm", ".venv-sglang"])
def test_entry_points_resolve_in_the_engine_environments(venv, tmp_path):
    proc = subprocess.run([str(venv_python(venv)), "-c", textwrap.dedent(_PROBE)], env=clean_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["vllm.general_plugins"] == [1, "deltainv.plugin.entrypoints", "vllm_plugin", "deltainv"]
    assert found["sglang.srt.plugins"] == [1, "deltainv.plugin.entrypoints", "sglang_plugin", "deltainv"]


_VLLM_LOADER = """
    import json, sys
    from vllm.plugins import load_general_plugins
    load_general_plugins()
    load_general_plugins()  # vLLM calls it more than once per process
    import deltainv.plugin as plugin
    st = plugin.status()
    print(json.dumps({"active": st["active"], "method": st["method"], "waiting": len(st["waiting"]),
                      "imported": [m for m in sys.modules if m.startswith("vllm.third_party.flash_linear_attention")]}))
"""


@pytest.mark.parametrize("env, active", [({}, False), ({"DELTAINV_METHOD": "blocked"}, True)])
def test_vllms_own_loader_runs_the_plugin_only_with_the_flag(env, active, tmp_path):
    proc = subprocess.run([str(venv_python(".venv-vllm")), "-c", textwrap.dedent(_VLLM_LOADER)],
                          env=clean_env(**env), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["active"] is active and out["imported"] == []
    if active:
        assert out["method"] == "blocked" and out["waiting"] > 0
        assert proc.stderr.count("deltainv[pid=") == 1  # idempotent: one activation line
    else:
        assert "deltainv" not in proc.stderr


def test_a_bad_value_fails_loudly_in_the_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "from deltainv.plugin.entrypoints import vllm_plugin; vllm_plugin()"],
                          env=clean_env(DELTAINV_METHOD="fastest"), cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0 and "SettingsError: DELTAINV_METHOD='fastest' is not valid" in proc.stderr
