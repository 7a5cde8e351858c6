"""Models and admin: ``/v1/models``, ``/health`` and the tokenizer endpoints lm-eval's
``local-completions`` uses when it has no local tokenizer (``/tokenizer_info``, ``/tokenize``,
``/detokenize``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..errors import APIError
from ..generation import engine_of, off_loop, read_json

router = APIRouter()


@router.get("/health")
async def health(request: Request):
    if engine_of(request).draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    return {"status": "ok"}


@router.get("/v1/models")
async def models(request: Request):
    engine = engine_of(request)
    return {"object": "list", "data": [{"id": engine.model_name, "object": "model", "created": 0,
                                        "owned_by": "deltainv", "max_model_len": engine.max_model_len}]}


@router.get("/tokenizer_info")
async def tokenizer_info(request: Request):
    engine = engine_of(request)
    tok = engine.tokenizer
    return {"eos_token": tok.eos_token, "bos_token": tok.bos_token, "pad_token": tok.pad_token,
            "chat_template": getattr(tok, "chat_template", None), "model_max_length": engine.max_model_len}


@router.post("/tokenize")
async def tokenize(request: Request):
    engine = engine_of(request)
    body = await read_json(request)
    prompt = body.get("prompt") if isinstance(body, dict) else None
    if not isinstance(prompt, str):
        raise APIError(400, "'prompt' must be a string", param="prompt")
    special = body.get("add_special_tokens", False)
    if not isinstance(special, bool):
        raise APIError(400, "'add_special_tokens' must be a boolean", param="add_special_tokens")
    ids = await engine.tokenize(prompt, special)
    return {"tokens": ids, "count": len(ids), "max_model_len": engine.max_model_len}


@router.post("/detokenize")
async def detokenize(request: Request):
    engine = engine_of(request)
    body = await read_json(request)
    ids = body.get("tokens") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(type(t) is int and 0 <= t < engine.vocab_size for t in ids):
        raise APIError(400, "'tokens' must be a list of token ids in range", param="tokens")
    return {"prompt": await off_loop(engine.decode, ids)}
