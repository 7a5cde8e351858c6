"""Post-import hooks: a callback runs right after a module is first imported, never before."""

import sys
import types

import pytest

from deltainv.plugin import hooks


@pytest.fixture
def package(tmp_path, monkeypatch):
    name = f"dvp_fake_{tmp_path.name.replace('-', '_')}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "ops.py").write_text("import os\nLOADED = True\ndef kernel(x):\n    return x + 1\n")
    (pkg / "user.py").write_text(f"from {name}.ops import kernel\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    hooks.forget()
    for mod in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[mod]


def test_callback_runs_after_the_module_executes_and_not_before(package):
    seen = []
    assert not hooks.when_imported(f"{package}.ops", lambda m: seen.append(m.LOADED))
    assert f"{package}.ops" not in sys.modules and seen == []
    assert hooks.pending() == {f"{package}.ops": 1}
    __import__(f"{package}.ops")
    assert seen == [True] and hooks.pending() == {}
    hooks.forget()
    assert not any(type(f).__name__ == "_PostImportFinder" for f in sys.meta_path)


def test_patching_at_import_reaches_later_from_imports_and_rebind_fixes_earlier_ones(package):
    def patch(module):
        original = module.kernel
        module.kernel = lambda x: x + 100
        module.original = original

    hooks.when_imported(f"{package}.ops", patch)
    user = __import__(f"{package}.user", fromlist=["kernel"])
    assert user.kernel(1) == 101  # `from ops import kernel` ran after the patch
    ops = sys.modules[f"{package}.ops"]
    early = types.ModuleType("dvp_early_copy")
    early.kernel = ops.original
    sys.modules["dvp_early_copy"] = early
    try:
        changed = hooks.rebind(ops.original, ops.kernel)
        assert "dvp_early_copy.kernel" in changed and early.kernel(1) == 101
    finally:
        del sys.modules["dvp_early_copy"]


def test_already_imported_module_runs_the_callback_at_once(package):
    __import__(f"{package}.ops")
    seen = []
    assert hooks.when_imported(f"{package}.ops", lambda m: seen.append(m.__name__))
    assert seen == [f"{package}.ops"]


def test_module_source_and_reload_still_work(package):
    import importlib
    import inspect

    hooks.when_imported(f"{package}.ops", lambda m: None)
    ops = importlib.import_module(f"{package}.ops")
    assert "def kernel" in inspect.getsource(ops)
    assert importlib.reload(ops).LOADED
