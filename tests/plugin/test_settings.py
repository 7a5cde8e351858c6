"""The one table of DELTAINV_* variables, parsed into a frozen Settings with clear errors."""

import dataclasses

import pytest

from deltainv.kernels import METHODS, PRECISIONS
from deltainv.plugin.settings import (
    TARGET_GROUPS,
    VARIABLE_BY_NAME,
    VARIABLES,
    Settings,
    SettingsError,
    variables_markdown,
)
from plugin_testing import DOCS


def test_off_by_default_and_off_means_off():
    assert not Settings.from_env({}).active
    assert not Settings.from_env({"DELTAINV_METHOD": "off"}).active
    assert not Settings.from_env({"DELTAINV_METHOD": ""}).active
    assert Settings.from_env({}).describe() == "off"


def test_table_uses_the_registry_and_precision_vocabulary_verbatim():
    assert VARIABLE_BY_NAME["DELTAINV_METHOD"].choices == ("off", *METHODS)
    assert VARIABLE_BY_NAME["DELTAINV_PRECISION"].choices == PRECISIONS
    assert set(VARIABLE_BY_NAME["DELTAINV_GUARD_METHOD"].choices) == {n for n, m in METHODS.items() if m.stable}
    for method in METHODS:
        for precision in METHODS[method].precisions:
            s = Settings.from_env({"DELTAINV_METHOD": method, "DELTAINV_PRECISION": precision})
            assert (s.method, s.precision) == (method, precision)


def test_every_variable_round_trips_and_every_field_has_a_variable():
    s = Settings.from_env({
        "DELTAINV_METHOD": "mxr_refine", "DELTAINV_PRECISION": "tf32", "DELTAINV_OPTIONS": "refine_precision=tf32x3",
        "DELTAINV_WU_PRECISION": "tf32x3", "DELTAINV_BACKEND": "torch", "DELTAINV_TARGETS": "vllm,sglang", "DELTAINV_STRICT": "1", "DELTAINV_GUARD": "off",
        "DELTAINV_GUARD_METHOD": "blocked", "DELTAINV_FORCE_TRITON": "no", "DELTAINV_LOG_LEVEL": "warning",
    })
    assert s.method_options == {"refine_precision": "tf32x3"} and s.targets == {"vllm", "sglang"}
    assert s.strict and not s.guard and not s.force_triton and s.guard_method == "blocked"
    assert s.wu_precision == "tf32x3" and Settings.from_env({}).wu_precision == "auto"
    assert Settings.from_env(s.to_env()) == s
    assert set(s.to_env()) == {v.name for v in VARIABLES}
    assert len(dataclasses.fields(Settings)) == len(VARIABLES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.method = "product"


@pytest.mark.parametrize("env, match", [
    ({"DELTAINV_METHOD": "fastest"}, r"DELTAINV_METHOD='fastest' is not valid; choose one of: off, substitution"),
    ({"DELTAINV_METHOD": "mxr", "DELTAINV_PRECISION": "fp8"}, r"DELTAINV_PRECISION='fp8' is not valid"),
    ({"DELTAINV_METHOD": "torch", "DELTAINV_PRECISION": "fp16"}, r"DELTAINV_PRECISION='fp16'.*takes fp32"),
    ({"DELTAINV_METHOD": "mxr", "DELTAINV_OPTIONS": "iters=3"}, r"DELTAINV_OPTIONS='iters=3'.*unknown option"),
    ({"DELTAINV_METHOD": "mxr_refine", "DELTAINV_OPTIONS": "refine_precision"}, r"expected comma-separated key=value"),
    ({"DELTAINV_METHOD": "mxr_refine", "DELTAINV_OPTIONS": "refine_precision=fp64"},
     r"refine_precision='fp64' of method 'mxr_refine' is not valid; it takes a precision"),
    ({"DELTAINV_METHOD": "newton_schulz", "DELTAINV_OPTIONS": "iters=0"}, r"iters=0 .* integer in \[1, 64\]"),
    ({"DELTAINV_METHOD": "newton_schulz", "DELTAINV_OPTIONS": "iters=x"}, r"iters='x' is not valid"),
    ({"DELTAINV_GUARD": "maybe"}, r"DELTAINV_GUARD='maybe' is not valid; use 1 or 0"),
    ({"DELTAINV_STRICT": "2"}, r"DELTAINV_STRICT='2' is not valid"),
    ({"DELTAINV_GUARD_METHOD": "product"}, r"DELTAINV_GUARD_METHOD='product' is not valid"),
    ({"DELTAINV_TARGETS": "vllm,tensorrt"}, r"unknown target group\(s\) \['tensorrt'\]"),
    ({"DELTAINV_BACKEND": "cuda"}, r"DELTAINV_BACKEND='cuda' is not valid"),
    ({"DELTAINV_WU_PRECISION": "fp8"}, r"DELTAINV_WU_PRECISION='fp8' is not valid; choose one of: auto, fp32"),
    ({"DELTAINV_METHOD": "product", "DELTAINV_BACKEND": "triton"}, r"method 'product' has no triton implementation"),
    ({"DELTAINV_LOG_LEVEL": "loud"}, r"DELTAINV_LOG_LEVEL='loud' is not valid"),
])
def test_bad_values_name_the_variable_and_the_choices(env, match):
    with pytest.raises(SettingsError, match=match):
        Settings.from_env(env)


def test_targets_and_case():
    assert Settings.from_env({"DELTAINV_TARGETS": "ALL"}).targets == set(TARGET_GROUPS)
    assert Settings.from_env({"DELTAINV_PRECISION": "FP16"}).precision == "fp16"


def test_docs_hold_the_table_verbatim():
    assert variables_markdown() in DOCS.read_text()


def test_recipes_that_cannot_converge_are_refused_before_any_engine_sees_them():
    """The library accepts newton_schulz with few iterations (the paper's study needs it); an engine
    would answer wrongly with it, so the settings refuse it, naming the option and what it needs."""
    from deltainv.plugin.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match=r"DELTAINV_OPTIONS='iters=3': newton_schulz with iters=3 does not "
                                            r"converge at C=64 \(needs 12\)"):
        Settings.from_env({"DELTAINV_METHOD": "newton_schulz", "DELTAINV_OPTIONS": "iters=3"})
    with pytest.raises(SettingsError, match="iters=5"):
        Settings(method="newton_schulz", options=(("iters", 5),))  # built directly: same check
    assert Settings.from_env({"DELTAINV_METHOD": "newton_schulz", "DELTAINV_OPTIONS": "iters=12"}).active
    # an unset precision is the default, or the method's own where it takes only others
    assert Settings.from_env({"DELTAINV_METHOD": "torch"}).precision == "fp32"
    assert Settings.from_env({"DELTAINV_METHOD": "substitution"}).precision == "tf32x3"
    # an explicit opt-in (accuracy studies, the parity gate's arms) accepts it and says why it is inaccurate
    study = Settings.from_env({"DELTAINV_METHOD": "newton_schulz", "DELTAINV_OPTIONS": "iters=3",
                               "DELTAINV_ALLOW_INACCURATE": "1"})
    assert study.active and "iters=3 does not converge" in study.inaccuracy()
    assert Settings.from_env(study.to_env()) == study


def test_unknown_variables_are_listed():
    from deltainv.plugin.settings import unknown_variables

    env = {"DELTAINV_METOD": "mxr", "DELTAINV_METHOD": "mxr", "DELTAINV_API_KEY": "k", "PATH": "/bin"}
    assert unknown_variables(env) == ["DELTAINV_METOD"]
