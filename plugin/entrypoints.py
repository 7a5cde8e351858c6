"""The engines' plugin entry points (declared in ``pyproject.toml``).

- ``vllm.general_plugins``: ``deltainv = deltainv.plugin.entrypoints:vllm_plugin``
- ``sglang.srt.plugins``: ``deltainv = deltainv.plugin.entrypoints:sglang_plugin``

Both engines call these in every process they start (API server, engine core, each worker /
scheduler) before the model is built. With ``DELTAINV_METHOD`` unset or ``off`` nothing is patched
and nothing is imported beyond the settings, except that vLLM's entry point always registers
deltainv's out-of-tree models (RWKV-7, :mod:`deltainv.plugin.engines.vllm_models`: a lazy registry
entry, no model code imported) where vLLM has no model of that name, and SGLang's entry point
likewise arranges RWKV-7's registration (:mod:`deltainv.plugin.engines.sglang_models`: post-import
hooks on SGLang's registries, nothing of SGLang imported) where SGLang has no RWKV-7 of its own.
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


def _register_models(engine: str) -> None:
    from .settings import Settings

    try:
        if engine == "vLLM":
            from .engines.vllm_models import register
        else:
            from .engines.sglang_models import register

        register()
    except Exception as exc:  # never take the engine down for its own models; DELTAINV_STRICT=1 makes it fatal
        from .log import configure, warning_once

        strict = Settings.from_env().strict
        configure()
        warning_once(f"{engine.lower()}-models", f"could not register deltainv's RWKV-7 model with {engine} ({exc!r})")
        if strict:
            raise


def vllm_plugin() -> None:
    """``vllm.general_plugins`` entry point (vLLM calls it in every process; it must be idempotent)."""
    _register_models("vLLM")
    _activate()


def sglang_plugin() -> None:
    """``sglang.srt.plugins`` entry point (SGLang's ``load_plugins`` calls it in every process)."""
    _register_models("SGLang")
    _activate()
