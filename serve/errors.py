"""Error types shared by the server's layers (re-exported from :mod:`.openai_schema`)."""

from __future__ import annotations

from .openai_schema import APIError


class ClientGone(Exception):
    """The client disconnected while its request was being handled: nothing more is sent."""


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None,
               type: str | None = None) -> dict:
    return APIError(status, message, param=param, code=code, type=type).body()


__all__ = ["APIError", "ClientGone", "error_body"]
