"""deltainv's out-of-tree vLLM models: RWKV-7 (fla's format), registered from the ``vllm.general_plugins``
entry point whether or not ``DELTAINV_METHOD`` is set.

- ``ModelRegistry.register_model("RWKV7ForCausalLM", "deltainv.models.rwkv7.vllm:RWKV7ForCausalLM")``,
  lazily (the model module, torch and vLLM's layers are imported only when vLLM inspects or builds
  the model), and only when vLLM has no model of that name: an in-tree RWKV-7 always wins.
- A per-architecture config hook (vLLM's ``MODELS_CONFIG_MAP``, what in-tree Mamba models use) that
  runs while vLLM builds its config, before any worker starts. It refuses a config that is not
  ``model_type: rwkv7``, tensor/pipeline parallel sizes above 1, prefix caching and speculative
  decoding with a clear error; sets the state block size as for vLLM's Mamba models; and on GPUs
  runs the model eagerly (CUDA graphs off: the model's step planning reads the batch on the host).

vLLM calls the entry point in every process it starts, more than once: registration is idempotent.
"""

from __future__ import annotations

ARCH = "RWKV7ForCausalLM"
MODEL = "deltainv.models.rwkv7.vllm:RWKV7ForCausalLM"


def _is_ours(entry) -> bool:
    return f"{getattr(entry, 'module_name', None)}:{getattr(entry, 'class_name', None)}" == MODEL


def register() -> str:
    """Register the RWKV-7 model and its config hook with vLLM if it can be imported; idempotent.

    Returns what happened: ``"registered"``, ``"already"`` (by an earlier call), ``"in-tree"`` (vLLM
    has its own ``RWKV7ForCausalLM``: left alone) or ``"no-vllm"``.
    """
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return "no-vllm"
    from vllm.model_executor.models.config import MODELS_CONFIG_MAP
    from vllm.model_executor.models.registry import ModelRegistry

    entry = ModelRegistry.models.get(ARCH)
    if entry is not None:
        return "already" if _is_ours(entry) else "in-tree"
    ModelRegistry.register_model(ARCH, MODEL)
    if ARCH not in MODELS_CONFIG_MAP:
        MODELS_CONFIG_MAP[ARCH] = _config_hook()
    return "registered"


def _config_hook():
    from vllm.model_executor.models.config import MambaModelConfig

    class RWKV7VllmConfig(MambaModelConfig):
        """vLLM config checks and defaults of deltainv's RWKV-7 (see the module docstring)."""

        @classmethod
        def verify_and_update_config(cls, vllm_config) -> None:
            verify_and_update(vllm_config)
            super().verify_and_update_config(vllm_config)

    RWKV7VllmConfig.__module__ = __name__
    return RWKV7VllmConfig


def verify_and_update(vllm_config) -> None:
    """Refuse what deltainv's RWKV-7 does not support (``ValueError`` saying what to change) and switch
    CUDA graphs off on GPUs."""
    from vllm.platforms import current_platform

    model_type = getattr(vllm_config.model_config.hf_config, "model_type", None)
    if model_type != "rwkv7":
        raise ValueError(f"{vllm_config.model_config.model}: config.json names architecture {ARCH} but has "
                         f"model_type={model_type!r}; deltainv's vLLM {ARCH} serves only fla-format RWKV-7 "
                         "checkpoints (model_type 'rwkv7')")
    p = vllm_config.parallel_config
    if p.tensor_parallel_size != 1 or p.pipeline_parallel_size != 1:
        raise ValueError(f"deltainv's vLLM {ARCH} supports tensor_parallel_size=1 and pipeline_parallel_size=1 only "
                         f"(got {p.tensor_parallel_size} and {p.pipeline_parallel_size}); use --data-parallel-size "
                         "to spread replicas over GPUs")
    if vllm_config.cache_config.enable_prefix_caching:
        raise ValueError(f"deltainv's vLLM {ARCH} does not support prefix caching; drop --enable-prefix-caching")
    if vllm_config.speculative_config is not None:
        raise ValueError(f"deltainv's vLLM {ARCH} does not support speculative decoding")
    if not current_platform.is_cpu() and not vllm_config.model_config.enforce_eager:
        from deltainv.plugin.log import configure, info_once

        configure()
        info_once("vllm-rwkv7-eager", f"vLLM {ARCH} (deltainv): CUDA graphs are not supported, running eagerly "
                  "(enforce_eager=True)")
        vllm_config.model_config.enforce_eager = True


__all__ = ["ARCH", "MODEL", "register", "verify_and_update"]
