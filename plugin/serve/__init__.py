"""`deltainv serve`: a patched OpenAI-compatible server on vLLM, SGLang or the embedded transformers engine."""
