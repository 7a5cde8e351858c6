"""deltainv's out-of-tree SGLang 0.5.23 models: RWKV-7 (fla's format), registered from the
``sglang.srt.plugins`` entry point whether or not ``DELTAINV_METHOD`` is set.

SGLang's ``load_plugins()`` runs the entry point first thing in every process (the launcher, the
tokenizer manager, every scheduler), before it parses the server arguments. Nothing of SGLang is
imported here: each registration waits for the SGLang module it extends
(:func:`deltainv.plugin.hooks.when_imported`) and happens right after SGLang has executed it.

- Config (``sglang.srt.utils.hf_transformers.common``): ``model_type: rwkv7`` is parsed as
  :class:`~deltainv.models.rwkv7.sglang_config.RWKV7SGLangConfig` (deltainv's RWKV-7 config plus
  the state shapes SGLang's Mamba pool reads), added to SGLang's config registry only when SGLang
  has no ``rwkv7`` config of its own. Everything below applies only when this one did: an in-tree
  RWKV-7 in SGLang always wins.
- Linear-attention spec (``sglang.srt.configs.linear_attn_model_registry``, SGLang's public way
  for out-of-tree linear-attention models): that config class maps to the model's backend,
  :class:`deltainv.models.rwkv7.sglang.RWKV7AttnBackend`; SGLang then sizes its Mamba state pool
  from the config and routes every layer to that backend. It matches by config class only, so a
  config that is not RWKV-7 is never claimed.
- Config-time checks (``sglang.srt.arg_groups.model_override_base``, run while SGLang resolves the
  server arguments, before any scheduler starts): a ``config.json`` naming ``RWKV7ForCausalLM``
  whose ``model_type`` is not ``rwkv7``, tensor/pipeline parallel sizes above 1 and speculative
  decoding are refused with an error saying what to change; the radix (prefix) cache and CUDA
  graphs are switched off (logged).
- Model (``sglang.srt.models.registry``): ``RWKV7ForCausalLM`` ->
  :class:`deltainv.models.rwkv7.sglang.RWKV7ForCausalLM`, only when SGLang's registry (its in-tree
  models loaded) has no model of that name.

``SGLANG_EXTERNAL_MODEL_PACKAGE=deltainv.models.sglang_models`` is the other way in (SGLang's
documented external-package switch): it puts the same class first, over an in-tree model too.
"""

from __future__ import annotations

ARCH = "RWKV7ForCausalLM"
MODEL_MODULE = "deltainv.models.rwkv7.sglang"
BACKEND = f"{MODEL_MODULE}.RWKV7AttnBackend"

_COMMON = "sglang.srt.utils.hf_transformers.common"
_SPECS = "sglang.srt.configs.linear_attn_model_registry"
_OVERRIDES = "sglang.srt.arg_groups.model_override_base"
_REGISTRY = "sglang.srt.models.registry"

#: What happened per part: "registered", "in-tree" (SGLang's own, left alone), or absent (not yet imported).
state: dict[str, str] = {}


def _config_class():
    from deltainv.models.rwkv7.sglang_config import RWKV7SGLangConfig

    return RWKV7SGLangConfig


def ours() -> bool:
    """True once deltainv's config class serves ``model_type: rwkv7`` in this process."""
    return state.get("config") == "registered"


def _register_config(common) -> None:
    registry = common._CONFIG_REGISTRY
    cls = _config_class()
    current = registry.get("rwkv7")
    if current is not None and current is not cls:
        state["config"] = "in-tree"
        return
    registry["rwkv7"] = cls
    state["config"] = "registered"


def _register_spec(specs) -> None:
    if any(s.backend_class_name == BACKEND for s in specs._LINEAR_ATTN_MODEL_REGISTRY):
        return
    # Matches instances of deltainv's config class only (never another model's config). RWKV-7 keeps
    # no per-prefix states, so SGLang's Mamba radix cache is not used (the override turns it off).
    specs.register_linear_attn_model(specs.LinearAttnModelSpec(
        config_class=_config_class(), backend_class_name=BACKEND, arch_names=[], uses_mamba_radix_cache=False,
        support_mamba_cache=False))
    state["spec"] = "registered"


def _register_overrides(base) -> None:
    if overrides in base._MODEL_OVERRIDE_FNS.get(ARCH, ()):
        return
    base.register_model_override(ARCH)(overrides)
    state["overrides"] = "registered"


def _register_model(registry) -> None:
    models = registry.ModelRegistry
    models.get_supported_archs()  # loads SGLang's in-tree models if SGLANG_EXTERNAL_MODEL_PACKAGE deferred them
    current = models.models.get(ARCH)
    if current is not None and getattr(current, "__module__", None) != MODEL_MODULE:
        state["model"] = "in-tree"
        return
    if not ours():
        state["model"] = "no-config"  # SGLang parses rwkv7 with its own config: leave its models alone
        return
    import importlib

    models.models[ARCH] = importlib.import_module(MODEL_MODULE).RWKV7ForCausalLM
    state["model"] = "registered"


def register() -> str:
    """Arrange every registration above (each runs when SGLang imports its module); idempotent.

    Returns ``"no-sglang"`` when SGLang is not installed, else ``"waiting"`` or ``"done"`` (all four
    SGLang modules were already imported and the registrations ran).
    """
    import importlib.util

    if importlib.util.find_spec("sglang") is None:
        return "no-sglang"
    from ..hooks import when_imported

    if state.get("_armed"):
        return "done" if {"config", "model"} <= set(state) else "waiting"
    state["_armed"] = "yes"
    ran = [when_imported(_COMMON, _register_config), when_imported(_SPECS, _register_spec),
           when_imported(_OVERRIDES, _register_overrides), when_imported(_REGISTRY, _register_model)]
    return "done" if all(ran) else "waiting"


def overrides(server_args, hf_config) -> dict:
    """SGLang model-override provider for ``RWKV7ForCausalLM`` (``register_model_override``): refuses what
    deltainv's model does not support, with the flag to change, and switches the radix cache and CUDA
    graphs off. Does nothing when SGLang serves RWKV-7 itself."""
    if not ours():
        return {}
    model_type = getattr(hf_config, "model_type", None)
    if model_type != "rwkv7":
        raise ValueError(f"{getattr(server_args, 'model_path', '?')}: config.json names architecture {ARCH} but has "
                         f"model_type={model_type!r}; deltainv's SGLang {ARCH} serves only fla-format RWKV-7 "
                         "checkpoints (model_type 'rwkv7')")
    from sglang.srt.arg_groups.model_override_base import resolving_view
    from sglang.srt.model_executor.cuda_graph_config import Backend, Phase, with_phase

    from deltainv.models.rwkv7.sglang_config import check_tp

    cfg = resolving_view(server_args)
    check_tp(int(cfg.tp_size or 1))
    pp = int(cfg.pp_size or 1)
    if pp != 1:
        raise ValueError(f"deltainv's SGLang {ARCH} runs with pipeline parallel size 1 (got --pp-size {pp})")
    if cfg.speculative_algorithm:
        raise ValueError(f"deltainv's SGLang {ARCH} does not support speculative decoding "
                         f"(--speculative-algorithm {cfg.speculative_algorithm})")

    from ..log import configure, info_once

    configure()
    info_once("sglang-rwkv7-flags", f"SGLang {ARCH} (deltainv): radix cache and CUDA graphs off (the step plan is "
              "built on the host; the state is kept per request, not per prefix)")
    # CUDA graphs are not model-overridable fields: declared the way SGLang's own capability adjustments
    # do (model_hook.py), both the boolean and the already parsed per-phase config.
    from sglang.srt.arg_groups.overrides import declare_resolution

    graphs = {"disable_cuda_graph": True}
    config = cfg.cuda_graph_config
    if config is not None:
        for phase in (Phase.DECODE, Phase.PREFILL):
            config = with_phase(config, phase, backend=Backend.DISABLED)
        graphs["cuda_graph_config"] = config
    declare_resolution(server_args, "deltainv RWKV7ForCausalLM", **graphs)
    return {"disable_radix_cache": True}


__all__ = ["ARCH", "BACKEND", "MODEL_MODULE", "overrides", "ours", "register", "state"]
