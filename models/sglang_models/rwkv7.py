"""``EntryClass`` of deltainv's SGLang RWKV-7 (:mod:`deltainv.models.rwkv7.sglang`)."""

from deltainv.models.rwkv7.sglang import EntryClass

__all__ = ["EntryClass"]
