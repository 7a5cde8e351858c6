"""Engine command-line flags that make the path carrying deltainv's kernel the one that runs.

``deltainv serve`` (and anyone launching an engine) appends :func:`engine_flags` to the engine's
command line and passes :func:`engine_env` in its environment. The plugin also steers the
engines' *automatic* backend choice at run time (``DELTAINV_FORCE_TRITON``), but an explicit flag
is visible in the engine's own logs and config and also covers a user's conflicting default.
"""

from __future__ import annotations

from .settings import Settings

#: engine -> flags that select the Triton GDN prefill path (the one deltainv patches).
TRITON_PREFILL_FLAGS: dict[str, tuple[str, ...]] = {
    "vllm": ("--gdn-prefill-backend", "triton"),
    "sglang": ("--linear-attn-prefill-backend", "triton"),
    "transformers": (),
}


def engine_flags(engine: str, settings: Settings | None = None) -> list[str]:
    """Flags to add to ``engine``'s command line (``vllm``, ``sglang``, ``transformers``) for ``settings``.

    Empty when deltainv is off or ``DELTAINV_FORCE_TRITON=0``.
    """
    if engine not in TRITON_PREFILL_FLAGS:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(TRITON_PREFILL_FLAGS)}")
    settings = Settings.from_env() if settings is None else settings
    if not settings.active or not settings.force_triton:
        return []
    return list(TRITON_PREFILL_FLAGS[engine])


def engine_env(settings: Settings | None = None) -> dict[str, str]:
    """The ``DELTAINV_*`` variables that carry ``settings`` into the engine's processes."""
    settings = Settings.from_env() if settings is None else settings
    return settings.to_env()


__all__ = ["TRITON_PREFILL_FLAGS", "engine_env", "engine_flags"]
