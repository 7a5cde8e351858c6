"""``deltainv serve``: an OpenAI-compatible server with deltainv's inversion active.

:mod:`.cli` (the command: vLLM / SGLang exec, or the embedded engine), :mod:`.hf_engine` (the
embedded transformers engine), :mod:`.app` (the FastAPI application), :mod:`.routes` (one router
per API area), :mod:`.middleware` (limits, API key, metrics), :mod:`.server` (uvicorn with header
timeouts and a drain on shutdown), :mod:`.openai_schema` (request validation).
"""
