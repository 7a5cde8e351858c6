"""The event loop never blocks: /health answers within 100 ms while a multi-MB prompt is read,
parsed and tokenized (a latency property of the event loop, not a speed measurement)."""

from __future__ import annotations

import threading
import time

import httpx


def test_health_answers_fast_while_a_multi_mb_prompt_is_handled(server, tiny_model):
    prompt = "lorem ipsum dolor sit amet " * 150_000  # 4 MB of text, about a million tokens
    box: dict = {}

    def big():
        t0 = time.monotonic()
        box["r"] = httpx.post(server.base + "/v1/completions", json={"model": tiny_model.name, "prompt": prompt},
                              timeout=120)
        box["took"] = time.monotonic() - t0

    with httpx.Client(timeout=5) as client:
        client.get(server.base + "/health")  # connection open before the big request starts
        t = threading.Thread(target=big)
        t.start()
        latencies = []
        while t.is_alive():
            t0 = time.perf_counter()
            assert client.get(server.base + "/health").status_code == 200
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.02)
        t.join()
    assert box["r"].status_code == 400 and box["r"].json()["error"]["code"] == "context_length_exceeded"
    assert len(latencies) >= 5, f"the big request took only {box['took']:.2f} s: make it bigger"
    assert max(latencies) < 0.1, f"/health took {max(latencies) * 1000:.0f} ms while a 4 MB prompt was handled"
