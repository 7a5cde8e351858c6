"""The engines' plugin entry points (declared in ``pyproject.toml``).

- ``vllm.general_plugins``: ``deltainv = deltainv.plugin.entrypoints:vllm_plugin``
- ``sglang.srt.plugins``: ``deltainv = deltainv.plugin.entrypoints:sglang_plugin``

Both engines call these in every process they start (API server, engine core, each worker /
scheduler) before the model is built. With ``DELTAINV_METHOD`` unset or ``off`` they return at
once: nothing is imported beyond the settings, nothing is patched.
"""

from __future__ import annotations


def _activate() -> None:
    from .log import logger
    from .settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:  # one line naming the variable, then the engine stops
        logger.error(f"invalid settings: {exc}")
        raise
    if not settings.active:
        return
    from .core import install

    install(settings)


def vllm_plugin() -> None:
    """``vllm.general_plugins`` entry point (vLLM calls it in every process; it must be idempotent)."""
    _activate()


def sglang_plugin() -> None:
    """``sglang.srt.plugins`` entry point (SGLang's ``load_plugins`` calls it in every process)."""
    _activate()
