"""deltainv's models as an SGLang external model package (``SGLANG_EXTERNAL_MODEL_PACKAGE``).

SGLang 0.5.23 imports every module of the package named by ``SGLANG_EXTERNAL_MODEL_PACKAGE`` and
registers each module's ``EntryClass``, ahead of (and over) its own models. deltainv's
``sglang.srt.plugins`` entry point already registers these models where SGLang has none of the
name (:mod:`deltainv.plugin.engines.sglang_models`), and it also registers the config class and
linear-attention backend they need; setting the variable only makes deltainv's class win over an
in-tree one::

    SGLANG_EXTERNAL_MODEL_PACKAGE=deltainv.models.sglang_models python -m sglang.launch_server ...

Modules: ``rwkv7`` (:class:`deltainv.models.rwkv7.sglang.RWKV7ForCausalLM`).
"""
