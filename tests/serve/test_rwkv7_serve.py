"""``deltainv serve --model models/rwkv7_tiny``: RWKV-7 (fla's format) on the embedded engine answers a
recall prompt through completions, chat, streaming and echo/logprobs (the real ``openai`` client)."""

from pathlib import Path

import httpx
import pytest
import serve_testing
from openai import OpenAI

from deltainv.eval.tasks import loader
from deltainv.kernels.registry import DEFAULT_METHOD, DEFAULT_PRECISION

MODEL = Path(__file__).resolve().parents[2] / "models" / "rwkv7_tiny"


@pytest.fixture(scope="module")
def rwkv7_server(tmp_path_factory):
    if not (MODEL / "model.safetensors").exists():
        pytest.fail(f"{MODEL} is missing")
    s = serve_testing.Server(["--engine", "hf", "--model", str(MODEL)], tmp_path_factory.mktemp("serve-rwkv7"))
    try:
        yield s.wait_healthy(timeout=600)
    finally:
        s.stop()


def test_rwkv7_tiny_answers_recall_prompts(rwkv7_server):
    client = OpenAI(base_url=rwkv7_server.base + "/v1", api_key="unused")
    name = MODEL.name
    assert [m["id"] for m in httpx.get(rwkv7_server.base + "/v1/models").json()["data"]] == [name]
    metrics = httpx.get(rwkv7_server.base + "/metrics").text
    assert f'deltainv_inversion_info{{method="{DEFAULT_METHOD}",precision="{DEFAULT_PRECISION}"}} 1.0' in metrics
    rows = loader.read_rows("mqar.jsonl")[:3] + loader.read_rows("kvlast.jsonl")[:2]
    for r in rows:
        # Completions: the greedy first word is the stored value (prompts span 2-4 chunks of 64).
        out = client.completions.create(model=name, prompt=r["prompt"], max_tokens=2, temperature=0)
        assert out.choices[0].text.split()[0] == r["answer"], (r["id"], out.choices[0].text)
        # Streaming gives the same text.
        streamed = client.completions.create(model=name, prompt=r["prompt"], max_tokens=2, temperature=0,
                                             stream=True)
        assert "".join(c.choices[0].text for c in streamed) == out.choices[0].text
    # Chat: the template passes the prompt through unchanged, so the answer is the same.
    r = rows[0]
    chat = client.chat.completions.create(model=name, messages=[{"role": "user", "content": r["prompt"]}],
                                          max_tokens=2, temperature=0)
    assert chat.choices[0].message.content.split()[0] == r["answer"]
    # Echo + logprobs (lm-eval's local-completions loglikelihood): the gold choice scores highest.
    scores = []
    for choice in r["choices"]:
        e = client.completions.create(model=name, prompt=r["prompt"] + " " + choice, max_tokens=1, echo=True,
                                      logprobs=1, temperature=0)
        scores.append(e.choices[0].logprobs.token_logprobs[-2])  # the choice's token (last prompt token)
    assert scores.index(max(scores)) == r["choices"].index(r["answer"]), scores
