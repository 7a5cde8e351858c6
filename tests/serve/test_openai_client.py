"""The real ``openai`` client against a live ``deltainv serve --engine hf``."""

import httpx
import openai
import pytest
from openai import OpenAI

from deltainv.kernels import DEFAULT_PRECISION


@pytest.fixture
def client(server):
    return OpenAI(base_url=server.base + "/v1", api_key="unused")


def test_banner_models_health_and_deltainv_active(server, tiny_model):
    out = server.output()
    assert f"listening on {server.base}" in out and "curl -s" in out and "from openai import OpenAI" in out
    assert "engine hf (requested with --engine)" in out
    models = httpx.get(server.base + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == [tiny_model.name]
    assert httpx.get(server.base + "/health").json() == {"status": "ok"}
    metrics = httpx.get(server.base + "/metrics").text
    assert f'deltainv_inversion_info{{method="mxr_refine",precision="{DEFAULT_PRECISION}"}} 1.0' in metrics


def test_completions_text_ids_batch_and_usage(client, tiny_model):
    r = client.completions.create(model=tiny_model.name, prompt="def f(x):", max_tokens=8, temperature=0)
    assert r.choices[0].finish_reason in ("length", "stop") and r.usage.prompt_tokens > 0
    ids = client.completions.create(model=tiny_model.name, prompt=[3, 4, 5, 6], max_tokens=4, temperature=0)
    both = client.completions.create(model=tiny_model.name, prompt=["def f(x):", "import os"], max_tokens=8,
                                     temperature=0)
    assert [c.index for c in both.choices] == [0, 1]
    assert both.choices[0].text == r.choices[0].text, "greedy is deterministic and batch-independent"
    assert ids.usage.prompt_tokens == 4


def test_echo_logprobs_contract_for_lm_eval(client, tiny_model):
    prompt = [5, 9, 17, 33, 65, 129]
    r = client.completions.create(model=tiny_model.name, prompt=prompt, max_tokens=1, echo=True, logprobs=1,
                                  temperature=0)
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == len(prompt) + 1, "every prompt token plus exactly one generated token"
    assert lp.token_logprobs[0] is None and all(x is not None for x in lp.token_logprobs[1:])
    # The generated token is greedy: its logprob is bit-identical in token_logprobs and top_logprobs.
    assert lp.token_logprobs[-1] == max(lp.top_logprobs[-1].values())
    # Echoed prompt text comes back without an added BOS.
    assert not r.choices[0].text.startswith("<s>")


def test_sampling_seed_stop_and_streaming(client, tiny_model):
    a = client.completions.create(model=tiny_model.name, prompt="x = ", max_tokens=12, temperature=0.9, top_p=0.9,
                                  seed=42)
    b = client.completions.create(model=tiny_model.name, prompt="x = ", max_tokens=12, temperature=0.9, top_p=0.9,
                                  seed=42)
    assert a.choices[0].text == b.choices[0].text
    full = client.completions.create(model=tiny_model.name, prompt="import os", max_tokens=16, temperature=0)
    streamed = client.completions.create(model=tiny_model.name, prompt="import os", max_tokens=16, temperature=0,
                                         stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == full.choices[0].text
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason
    text = full.choices[0].text
    if len(text) > 3:
        stop = text[2:4]
        stopped = client.completions.create(model=tiny_model.name, prompt="import os", max_tokens=16, temperature=0,
                                            stop=[stop])
        assert stopped.choices[0].finish_reason == "stop" and stop not in stopped.choices[0].text
        assert text.startswith(stopped.choices[0].text)


def test_chat_and_chat_streaming(client, tiny_model):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    r = client.chat.completions.create(model=tiny_model.name, messages=msgs, max_tokens=8, temperature=0,
                                       logprobs=True, top_logprobs=2)
    msg = r.choices[0].message
    assert msg.role == "assistant" and isinstance(msg.content, str)
    assert len(r.choices[0].logprobs.content) == r.usage.completion_tokens
    s = client.chat.completions.create(model=tiny_model.name, messages=msgs, max_tokens=8, temperature=0, stream=True)
    chunks = list(s)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == msg.content


def test_client_errors_are_typed(client, tiny_model):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x")
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=tiny_model.name, prompt="x", temperature=3)
    assert e.value.body["param"] == "temperature"
