"""Engine flags that select the Triton prefill path deltainv patches."""

import pytest

from deltainv.plugin import Settings, engine_env, engine_flags


def test_flags_only_when_active_and_forcing():
    on = Settings(method="mxr_refine")
    assert engine_flags("vllm", on) == ["--gdn-prefill-backend", "triton"]
    assert engine_flags("sglang", on) == ["--linear-attn-prefill-backend", "triton"]
    assert engine_flags("transformers", on) == []
    assert engine_flags("vllm", Settings()) == []
    assert engine_flags("vllm", Settings(method="mxr_refine", force_triton=False)) == []
    with pytest.raises(ValueError, match="unknown engine 'tgi'"):
        engine_flags("tgi", on)


def test_engine_env_carries_the_settings():
    s = Settings(method="substitution", precision="bf16", guard=False)
    env = engine_env(s)
    assert env["DELTAINV_METHOD"] == "substitution" and env["DELTAINV_GUARD"] == "0"
    assert Settings.from_env(env) == s
