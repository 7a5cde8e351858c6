"""deltainv's RWKV-7 in SGLang 0.5.23 (its own virtual environment), function level.

PyPI SGLang cannot serve on a CPU, so ``scripts/sglang_rwkv7_check.py`` runs in ``.venv-sglang``
what ``python -m sglang.launch_server`` runs before serving, on the command line of
``docs/rwkv7.md`` ("Serve a checkpoint with SGLang"): ``load_plugins()`` (deltainv's
``sglang.srt.plugins`` entry point, no ``DELTAINV_*`` set), ``prepare_server_args`` and SGLang's
argument resolution, ``ModelConfig`` and ``ModelRegistry``. Then it builds what a scheduler builds
(the registered model with ``models/rwkv7_tiny``'s weights, SGLang's Mamba state pool sized from
the config, the attention backend SGLang's own wrapper picks) and runs real ``ForwardBatch`` steps
on CPU tensors, against deltainv's ``models/rwkv7`` (transformers path, fp32) on each whole
sequence alone. The model's prefill (chunked DPLR) and decode (recurrence) are PyTorch; no Triton
kernel runs in them, and SGLang's Triton code is not on this path either (the script still runs
under ``TRITON_INTERPRET=1``, as the engine would see it on a machine without a GPU).
"""

from __future__ import annotations

import json
import shlex

import pytest

from plugin_testing import ROOT, clean_env, doc_command, run_script, venv_python

pytestmark = pytest.mark.slow

DOCS = ROOT / "docs" / "rwkv7.md"
MODEL = ROOT / "models" / "rwkv7_tiny"
#: fp32 on both sides: the same ops, grouped differently (packed batches, chunk boundaries, decode steps).
TOL = 1e-4


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    python = venv_python(".venv-sglang")
    work = tmp_path_factory.mktemp("sglang-rwkv7")
    exports, command = doc_command("sglang-serve-rwkv7", "python -m sglang.launch_server", DOCS)
    assert not exports  # nothing to set: the entry point registers the model, the registry's default inverts
    args = shlex.split(command.replace('"$MODEL"', str(MODEL)).replace('"$PORT"', "30000"))[3:]
    out = work / "report.json"
    proc = run_script(python, "sglang_rwkv7_check.py", str(out), str(work), *args, cwd=work,
                      env=clean_env(TRITON_INTERPRET="1"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    data["stderr"] = proc.stderr
    return data


def test_entry_point_registers_config_backend_and_model_lazily(report):
    assert report["interpreter"]
    assert not report["sglang_registry_imported_by_plugin"]  # the plugin waits for SGLang's own imports
    assert report["registry"]["state"] == {"config": "registered", "spec": "registered", "overrides": "registered",
                                           "model": "registered"}
    assert report["config"]["class"] == "deltainv.models.rwkv7.sglang_config.RWKV7SGLangConfig"


def test_sglang_registry_finds_the_model_for_rwkv7_only(report):
    reg = report["registry"]
    assert reg["rwkv7"] == "deltainv.models.rwkv7.sglang.RWKV7ForCausalLM"
    assert reg["external_package"] == {"RWKV7ForCausalLM": reg["rwkv7"]}  # SGLANG_EXTERNAL_MODEL_PACKAGE's loader
    assert reg["qwen3_next"] == "sglang.srt.models.qwen3_next.Qwen3NextForCausalLM"
    assert reg["qwen3_next_linear_spec"] is None  # our linear-attention spec never matches another config
    refused = report["refused"]
    assert "model_type='qwen3_next'" in refused["misnamed_args"] and "rwkv7" in refused["misnamed_args"]
    assert "model_type='qwen3_next'" in refused["misnamed_model"]


def test_server_arguments_resolve_with_the_model_constraints(report):
    resolved = report["resolved"]
    assert resolved["model_path"] == str(MODEL)
    assert resolved["disable_radix_cache"] and resolved["disable_cuda_graph"]
    assert resolved["cuda_graph_backends"] == {"decode": "disabled", "prefill": "disabled"}
    assert "tensor parallel size 1" in report["refused"]["tp2"] and "--tp-size 2" in report["refused"]["tp2"]


def test_state_lives_in_sglang_mamba_pool_with_its_shapes_and_dtypes(report):
    c = report["config"]
    assert c["conv"] == [[2, 128]] and c["temporal"] == [2, 64, 64]  # token shifts [2, D]; DPLR state [H, K, V]
    assert c["conv_dtype"] == c["temporal_dtype"] == "torch.float32"
    assert c["layers"] == [0, 1] and c["full_attention_layer_ids"] == []
    assert report["backend"] == {"wrapper": "HybridLinearAttnBackend", "linear": "RWKV7AttnBackend",
                                 "full_attn_layers": []}
    assert report["weights"]["loaded"] == report["weights"]["in_checkpoint"]


def test_forward_matches_the_reference(report):
    err = report["err"]
    # Prefill in one packed batch of two sequences: the same ops as the reference, bit for bit.
    assert err["prefill_A"] <= TOL and err["prefill_B"] <= TOL, err
    # Prefill then decode (recurrent step), a mixed step, a prompt prefilled in two chunks: whole-sequence answers.
    for key in ("decode", "mixed_last_A", "mixed_B", "chunk1_C", "chunk2_C", "after_mixed_B"):
        assert err[key] <= TOL, (key, err)
    assert report["scale"] > 1.0


def test_batches_and_slots_do_not_leak(report):
    err = report["err"]
    assert err["batched_vs_single_A"] <= TOL and err["batched_vs_single_B"] <= TOL, err
    assert report["slots"]["C_reuses_A"]  # C ran from A's freed slot and still matched its single run
    assert report["spare_slot_untouched"]


def test_wrong_inversion_moves_the_served_prefill(report):
    wrong = report["wrong_method"]
    assert "newton_schulz" in wrong["inversion"]
    assert wrong["err"] > 0.5, wrong
    assert "prefill: chunked DPLR, inversion method=" in report["stderr"]
