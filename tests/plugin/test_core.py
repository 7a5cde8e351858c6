"""install / status / uninstall against a real engine module (fla 0.6, installed in .venv).

Process-wide behaviour (what is imported when) runs in fresh subprocesses; the rest runs here and
restores fla's functions afterwards. Engine incompatibilities (changed signature, unknown version,
missing module) are produced by changing or faking the *engine*, never the plugin.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types

import pytest
import torch

import deltainv.plugin as plugin
from deltainv.kernels import solve_tril as reference_solve_tril
from deltainv.kernels.inputs import engine_layout
from deltainv.plugin import PatchError, Settings
from plugin_testing import clean_env

FLA_SOLVE = "fla.ops.utils.solve_tril.solve_tril"
FLA_QLA = "fla.ops.gated_delta_rule.backends.flash_qla.FlashQLABackend.chunk_gated_delta_rule_verifier"
FLA_KDA = ["fla.ops.kda.backends.flash_kda.FlashKDABackend.chunk_kda_verifier", "fla.ops.kda.chunk_fwd.chunk_kda_fwd_intra"]


def _python(code: str, tmp_path, **env) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=clean_env(**env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["stderr"] = proc.stderr
    return out


@pytest.fixture
def fla_modules():
    import fla.ops.gated_delta_rule.chunk as chunk
    import fla.ops.utils as utils

    solve_mod = sys.modules["fla.ops.utils.solve_tril"]  # the package attribute shadows the module

    originals = (solve_mod.solve_tril, utils.solve_tril, chunk.chunk_gated_delta_rule_fwd_intra)
    yield types.SimpleNamespace(solve=solve_mod, utils=utils, chunk=chunk, originals=originals)
    plugin.uninstall()
    solve_mod.solve_tril, utils.solve_tril, chunk.chunk_gated_delta_rule_fwd_intra = originals


def test_install_is_lazy_idempotent_and_patches_on_first_import(tmp_path):
    out = _python("""
        import json, sys, torch
        import deltainv.plugin as plugin
        first = plugin.install()
        lazy = [m for m in sys.modules if m.startswith(("fla", "triton"))]
        import fla.ops.gated_delta_rule.chunk as chunk, fla.ops.utils as utils
        defining = sys.modules["fla.ops.utils.solve_tril"]  # the package attribute shadows the module
        fn = defining.solve_tril
        again = plugin.install()
        try:
            plugin.install(plugin.Settings(method="substitution"))
            conflict = None
        except RuntimeError as exc:
            conflict = str(exc)
        print(json.dumps({
            "waiting": first["waiting"], "imported_by_install": lazy, "cuda_init": torch.cuda.is_initialized(),
            "same_fn": defining.solve_tril is fn and utils.solve_tril is fn,
            "targets": [getattr(f, "__deltainv_target__", None) for f in (fn, chunk.chunk_gated_delta_rule_fwd_intra)],
            "patched": [r["target"] for r in again["patched"]], "conflict": conflict,
        }))
    """, tmp_path, DELTAINV_METHOD="mxr_refine")
    assert "fla.ops.utils.solve_tril.solve_tril" in out["waiting"]
    assert out["imported_by_install"] == [] and not out["cuda_init"]
    assert out["same_fn"]  # the package's `from .solve_tril import solve_tril` copy got the patched one
    assert out["targets"] == [FLA_SOLVE, "fla.ops.gated_delta_rule.chunk_fwd.chunk_gated_delta_rule_fwd_intra"]
    # ... and the FlashQLA verifier of fla's GDN dispatch (imported by chunk.py), a route; fla's GDN chunk
    # module imports its KDA modules too (fla 0.6.0), so the KDA intra and the FlashKDA verifier as well
    assert sorted(out["patched"]) == sorted(out["targets"] + [FLA_QLA] + FLA_KDA)
    assert "already installed" in out["conflict"]
    assert out["stderr"].count("INFO: active (method=mxr_refine") == 1


def test_off_installs_nothing(tmp_path):
    out = _python("""
        import json, sys, deltainv.plugin as plugin
        st = plugin.install()
        import fla.ops.utils as m
        print(json.dumps({"active": st["active"], "finder": any("PostImport" in type(f).__name__ for f in sys.meta_path),
                          "patched": hasattr(m.solve_tril, "__deltainv_target__")}))
    """, tmp_path)
    assert out == {"active": False, "finder": False, "patched": False, "stderr": out["stderr"]}
    assert "deltainv" not in out["stderr"]


def test_install_after_import_rebinds_existing_copies_and_uninstall_restores(fla_modules):
    copy_holder = types.ModuleType("dvp_user_module")
    copy_holder.solve_tril = fla_modules.utils.solve_tril
    sys.modules["dvp_user_module"] = copy_holder
    try:
        st = plugin.install(Settings(method="substitution", targets=frozenset({"fla"})))
        patched = {r["target"]: r for r in st["patched"]}
        assert "dvp_user_module.solve_tril" in patched[FLA_SOLVE]["rebound"]
        assert copy_holder.solve_tril is fla_modules.solve.solve_tril is fla_modules.utils.solve_tril
        assert copy_holder.solve_tril.__deltainv_target__ == FLA_SOLVE
        assert list(__import__("inspect").signature(copy_holder.solve_tril).parameters) == [
            "A", "cu_seqlens", "chunk_indices", "output_dtype"]
        plugin.uninstall()
        assert copy_holder.solve_tril is fla_modules.originals[0]
        assert fla_modules.utils.solve_tril is fla_modules.originals[1]
        assert not plugin.status()["active"]
    finally:
        del sys.modules["dvp_user_module"]


def test_patched_function_computes_with_the_chosen_method(fla_modules, seed):
    plugin.install(Settings(method="mxr_refine", precision="tf32", options=(("refine_precision", "tf32x3"),),
                            targets=frozenset({"fla"})))
    A = engine_layout("gdn", 1, 200, 2, 64, seed=seed)
    cu = torch.tensor([0, 77, 200], dtype=torch.int32)
    got = fla_modules.utils.solve_tril(A, cu_seqlens=cu, output_dtype=torch.bfloat16)
    want = reference_solve_tril(A, cu, output_dtype=torch.bfloat16, method="mxr_refine", precision="tf32",
                                refine_precision="tf32x3")
    assert torch.equal(got, want)
    counters = plugin.status()["counters"][FLA_SOLVE]
    assert counters == {"calls": 1, "guard_checked": 1}


def test_changed_signature_keeps_the_engine_function_and_warns_once(fla_modules):
    def solve_tril(A, cu_seqlens=None, output_dtype=torch.float):  # an engine release that dropped chunk_indices
        return "engine"

    fla_modules.solve.solve_tril = solve_tril
    st = plugin.install(Settings(method="mxr", targets=frozenset({"fla"})))
    assert fla_modules.solve.solve_tril is solve_tril
    assert "signature changed" in st["skipped"][FLA_SOLVE]
    assert len(st["warnings"]) == 1 and "expects ('A', 'cu_seqlens', 'chunk_indices', 'output_dtype')" in st["warnings"][0]
    assert [r["target"] for r in st["patched"] if r["rule"] == "gdn"] == [
        FLA_QLA, "fla.ops.gated_delta_rule.chunk_fwd.chunk_gated_delta_rule_fwd_intra"]
    plugin.uninstall()
    with pytest.raises(PatchError, match="DELTAINV_STRICT=1.*solve_tril has parameters"):
        plugin.install(Settings(method="mxr", targets=frozenset({"fla"}), strict=True))


def test_unsupported_call_goes_to_the_engine_function(fla_modules):
    calls = []

    def engine_solve_tril(A, cu_seqlens=None, chunk_indices=None, output_dtype=torch.float):
        calls.append(A.shape[-1])
        return torch.zeros_like(A)

    fla_modules.solve.solve_tril = engine_solve_tril  # stands in for fla's kernel (it needs a GPU)
    plugin.install(Settings(method="mxr", targets=frozenset({"fla"})))
    patched = fla_modules.solve.solve_tril
    assert patched.__wrapped__ is engine_solve_tril
    out = patched(torch.zeros(1, 24, 2, 8))  # BT = 8: deltainv supports 16..128
    assert calls == [8] and out.shape == (1, 24, 2, 8)
    patched(engine_layout("gdn", 1, 64, 2, 64))
    assert calls == [8]
    assert plugin.status()["counters"][FLA_SOLVE] == {"original_calls": 1, "calls": 1, "guard_checked": 1}


def test_guard_recomputes_a_non_finite_inverse_with_the_stable_method(fla_modules):
    A = engine_layout("all_ones", 1, 128, 2, 64)  # the product form overflows fp16 here
    stable = reference_solve_tril(A, method="substitution", precision="fp32")
    plugin.install(Settings(method="product", precision="fp16", targets=frozenset({"fla"})))
    for _ in range(2):
        X = fla_modules.utils.solve_tril(A)
        assert torch.isfinite(X).all() and torch.equal(X, stable)
    st = plugin.status()
    assert st["counters"][FLA_SOLVE] == {"calls": 2, "guard_checked": 2, "guard_recomputed": 2}
    assert st["guard_fallbacks"] == 2
    plugin.uninstall()
    plugin.install(Settings(method="product", precision="fp16", guard=False, targets=frozenset({"fla"})))
    assert not torch.isfinite(fla_modules.utils.solve_tril(A)).all()
    assert "guard_checked" not in plugin.status()["counters"][FLA_SOLVE]


def test_guard_warning_is_logged_once(tmp_path):
    out = _python("""
        import json, deltainv.plugin as plugin
        from deltainv.kernels.inputs import engine_layout
        plugin.install()
        import fla.ops.utils as u
        A = engine_layout("all_ones", 1, 128, 2, 64)
        for _ in range(3):
            u.solve_tril(A)
        print(json.dumps(plugin.status()["counters"]))
    """, tmp_path, DELTAINV_METHOD="product", DELTAINV_PRECISION="fp16", DELTAINV_TARGETS="fla")
    assert out[FLA_SOLVE]["guard_recomputed"] == 3
    assert out["stderr"].count("WARNING: non-finite result in fla.ops.utils.solve_tril.solve_tril") == 1


def _fake_engine(root, version: str, with_module: bool) -> None:
    """A stand-in 'sglang' distribution (metadata + package) of the given version."""
    dist = root / f"sglang-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: sglang\nVersion: {version}\n")
    pkg = root / "sglang"
    (pkg / "kernels/ops/attention/fla").mkdir(parents=True)
    for d in (pkg, pkg / "kernels", pkg / "kernels/ops", pkg / "kernels/ops/attention", pkg / "kernels/ops/attention/fla"):
        (d / "__init__.py").write_text("")
    if with_module:
        (pkg / "kernels/ops/attention/fla/chunk_fwd.py").write_text(
            "def chunk_gated_delta_rule_fwd_intra(k, v, g=None, beta=None, cu_seqlens=None, chunk_size=64, "
            "chunk_indices=None):\n    return 'sglang'\n")


@pytest.mark.parametrize("version, with_module, message", [
    ("0.4.9", True, "sglang 0.4.9 is not a version deltainv knows"),
    ("0.5.23", False, "sglang 0.5.23 lacks the target module(s) of: sglang.gdn_intra"),
])
def test_unknown_version_or_missing_target_warns_once_or_fails_strict(tmp_path, version, with_module, message):
    site = tmp_path / "site"
    _fake_engine(site, version, with_module)
    code = f"""
        import json, sys
        sys.path.insert(0, {str(site)!r})
        import deltainv.plugin as plugin
        st = plugin.install()
        try:
            import sglang.kernels.ops.attention.fla.chunk_fwd as m
            result = m.chunk_gated_delta_rule_fwd_intra(1, 2)  # the engine's own function, untouched
        except ImportError:
            result = None
        print(json.dumps({{"warnings": st["warnings"], "result": result}}))
    """
    out = _python(code, tmp_path, DELTAINV_METHOD="mxr_refine", DELTAINV_TARGETS="sglang")
    assert len(out["warnings"]) == 1 and message in out["warnings"][0]
    assert "keeping the engine's own function" in out["warnings"][0]
    assert out["result"] == ("sglang" if with_module else None)
    assert out["stderr"].count("WARNING") == 1
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True, text=True,
                          env=clean_env(DELTAINV_METHOD="mxr_refine", DELTAINV_TARGETS="sglang", DELTAINV_STRICT="1"))
    assert proc.returncode != 0 and "PatchError: deltainv (DELTAINV_STRICT=1): " + message in proc.stderr


def test_status_is_the_contract_serve_and_doctor_read(fla_modules):
    st = plugin.install(Settings(method="substitution", targets=frozenset({"fla"})))
    for key in ("active", "pid", "method", "precision", "options", "guard", "backend", "strict", "targets", "engines",
                "patched", "waiting", "skipped", "warnings", "counters", "guard_fallbacks"):
        assert key in st
    json.dumps(st)  # plain data
    record = next(r for r in st["patched"] if r["target"] == FLA_SOLVE)
    assert record["method"] == "substitution" and record["engine"] == "fla-core" and record["role"] == "kernel"
