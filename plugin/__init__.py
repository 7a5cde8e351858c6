"""Engine hooks (vLLM, SGLang, transformers, fla), activated by ``DELTAINV_METHOD``.

Not implemented yet: see the engine-hooks issue. Nothing here patches anything.
"""
