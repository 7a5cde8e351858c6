"""RWKV-7 (fla's Hugging Face format) on deltainv's DPLR path: config, model and Auto registration.

``import deltainv`` arranges for registration as soon as transformers' Auto classes are imported
(see ``deltainv/_transformers_hook.py``), so ``AutoConfig`` / ``AutoModelForCausalLM.from_pretrained``
load an fla ``model_type: rwkv7`` checkpoint without importing anything from here by hand.
"""

from __future__ import annotations



def register_config() -> None:
    """``AutoConfig`` learns ``model_type: rwkv7`` (idempotent)."""
    from transformers.models.auto.configuration_auto import AutoConfig

    from .configuration import RWKV7Config

    AutoConfig.register("rwkv7", RWKV7Config, exist_ok=True)


def _stand_in(name: str):
    """A class the Auto mappings accept (right ``config_class``) that imports the real model on first use."""
    from .configuration import RWKV7Config

    def real():
        from . import modeling

        register_models(real=True)
        return getattr(modeling, name)

    def from_pretrained(cls, *args, **kwargs):
        return real().from_pretrained(*args, **kwargs)

    def _from_config(cls, *args, **kwargs):
        return real()._from_config(*args, **kwargs)

    return type(name, (), {"config_class": RWKV7Config, "__module__": __name__, "from_pretrained":
                           classmethod(from_pretrained), "_from_config": classmethod(_from_config)})


def register_models(real: bool = False) -> None:
    """``AutoModel`` / ``AutoModelForCausalLM`` map :class:`RWKV7Config` to the model classes (idempotent);
    stand-ins until ``real`` (the modeling module is imported only when a model is built)."""
    from transformers.models.auto.modeling_auto import AutoModel, AutoModelForCausalLM

    from .configuration import RWKV7Config

    register_config()
    if real:
        from .modeling import RWKV7ForCausalLM, RWKV7Model
    else:
        RWKV7Model, RWKV7ForCausalLM = _stand_in("RWKV7Model"), _stand_in("RWKV7ForCausalLM")
    AutoModel.register(RWKV7Config, RWKV7Model, exist_ok=True)
    AutoModelForCausalLM.register(RWKV7Config, RWKV7ForCausalLM, exist_ok=True)


def register() -> None:
    """Register everything with transformers now, the real classes included."""
    register_models(real=True)


def __getattr__(name: str):
    # The model classes import transformers; keep `import deltainv.models.rwkv7` itself cheap.
    if name == "RWKV7Config":
        from .configuration import RWKV7Config

        return RWKV7Config
    if name in ("RWKV7ForCausalLM", "RWKV7Model", "RWKV7State", "Inversion"):
        from . import modeling

        return getattr(modeling, name)
    raise AttributeError(name)


__all__ = ["Inversion", "RWKV7Config", "RWKV7ForCausalLM", "RWKV7Model", "RWKV7State", "register",
           "register_config", "register_models"]
