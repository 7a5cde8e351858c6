"""Constructed ("recall circuit") initialisation of the shipped tiny RWKV-7 (``models/rwkv7_tiny``).

The RWKV-7 counterpart of :mod:`deltainv.models.recall_init` (GDN): layer 0's time mixing is
written as the textbook delta-rule lookup, so the model recalls at step 0 and training only has to
learn the rest. Hidden 128, two heads of 64:

* **Embeddings**: dim 0 is a constant 1, dim 1 flags value tokens (``00``..``99`` and the digits),
  dims 2..127 carry a random Gaussian code per key word and per value word (other tokens: small
  random codes).
* **Token shift as the key's source**: ``x_k = 1`` (the key projection reads the *previous* token),
  ``x_r = x_v = x_a = 0`` (receptance, value and learning rate read the current one). At a value
  token ``v`` right after its key ``k`` the layer writes ``code(k) -> code(v)``; at a query ``? k``
  it reads with ``code(k)``.
* **DPLR as the delta rule**: ``kk = normalize(k)``, learning rate ``a = sigmoid(+-beta_logit)`` on
  value / other tokens (``a_lora`` reads the flag), ``k_a = 1`` so the written key is ``k * a``:
  with ``a ~ 1`` the update ``S <- S - kk (kk^T S) + k v^T`` replaces the value stored under ``k``
  exactly (an overwrite), with ``a ~ 0`` nothing is written or erased.
* **No forgetting**: ``w_lora`` bias -20, so the per-token log-decay is ~ -1e-9.
* Output gate constant 1, ``r_k = 0`` (no bonus term), ``g_norm`` weight 1 normalises each head's
  read-out, ``o_proj`` writes it (x ``out_scale``) back into the value-code dims, and ``lm_head``'s
  rows for value words are their codes.
* Every other write to the residual (``o_proj`` of the other layers, every ``ffn.value``) starts
  at zero; the rest keeps the default init.

The recall therefore runs through the chunked DPLR rule of layer 0, i.e. through the inverse of
``I + A`` with ``A_ij = sum_c kk_ic (kk_jc a_jc) exp(...)`` on every 64-token chunk: near 1 on
runs of overwrites of one key, exactly the case where fla's fp16 product recipe loses digits.
"""

from __future__ import annotations

import math

import torch

from deltainv.eval.tasks import synthetic
from deltainv.models.recall_init import single_token

#: Parameters of the construction, recorded in ``training.json``.
DEFAULTS = dict(layer=0, beta_logit=6.0, out_scale=3.0, decay_bias=-20.0, other_code_std=0.3)


def describe(params: dict) -> str:
    return ("recall circuit written into RWKV-7 layer {layer}'s time mixing (see models/rwkv7_recall_init.py): "
            "key from the previous token (x_k = 1), receptance/value/lr from the current one, lr = "
            "sigmoid(+-{beta_logit}) on value/other tokens, k_a = 1, w_lora bias {decay_bias} (no decay), random "
            "Gaussian key/value codes in dims 2..127 (2 heads on the two halves), o_proj x {out_scale}, "
            "lm_head rows = value codes; other o_proj and every ffn.value zero").format(**params)


@torch.no_grad()
def apply(model, tok, gen: torch.Generator, **overrides) -> dict:
    """Write the recall circuit into ``model`` (a fresh ``RWKV7ForCausalLM``); returns the parameters used."""
    p = {**DEFAULTS, **overrides}
    cfg = model.config
    D, hd = cfg.hidden_size, cfg.head_dim
    if not (D == 128 and hd == 64 and cfg.value_dim[p["layer"]] == D):
        raise ValueError("the construction assumes hidden 128, two heads of 64 and value_dim = hidden")
    BIAS, FLAG = 0, 1
    halves = [list(range(2, 65)), list(range(65, D))]
    V = model.model.embeddings.weight.shape[0]

    key_ids = [single_token(tok, " " + k) for k in synthetic.KEYS]
    val_ids = [single_token(tok, " " + v) for v in synthetic.VALUES + synthetic.DIGITS]
    E = torch.randn(V, D, generator=gen) * p["other_code_std"]
    E[:, BIAS] = 1.0
    E[:, FLAG] = 0.0
    for i in key_ids:
        E[i, 2:] = torch.randn(D - 2, generator=gen)
    for i in val_ids:
        E[i, 2:] = torch.randn(D - 2, generator=gen)
        E[i, FLAG] = 1.0
    model.model.embeddings.weight.copy_(E)

    for li, layer in enumerate(model.model.layers):
        layer.ffn.value.weight.zero_()
        if li != p["layer"]:
            layer.attn.o_proj.weight.zero_()
        for norm in (getattr(layer, "pre_norm", None), layer.attn_norm, layer.ffn_norm):
            if norm is not None:
                norm.weight.fill_(1.0)
                norm.bias.zero_()

    att = model.model.layers[p["layer"]].attn
    att.x_r.zero_()
    att.x_v.zero_()
    att.x_a.zero_()
    att.x_k.fill_(1.0)
    att.k_k.fill_(1.0)
    att.k_a.fill_(1.0)
    att.r_k.zero_()
    ident = torch.zeros(D, D)
    for h in range(2):
        for j, d in enumerate(halves[h]):
            ident[h * hd + j, d] = 1.0
    att.r_proj.weight.copy_(ident)
    att.k_proj.weight.copy_(ident)
    att.v_proj.weight.copy_(ident)
    # Learning rate from the (layer-normed) value flag: a = sigmoid(beta * (2 flag - 1)) per channel.
    r = att.a_lora.lora[0].weight.shape[0]
    att.a_lora.lora[0].weight.zero_()
    att.a_lora.lora[0].weight[0, FLAG] = 1.0
    att.a_lora.lora[2].weight.zero_()
    att.a_lora.lora[2].weight[:, 0] = 2 * p["beta_logit"]
    att.a_lora.lora[2].bias.fill_(-p["beta_logit"])
    att.w_lora.lora[2].weight.zero_()
    att.w_lora.lora[2].bias.fill_(p["decay_bias"])
    # Output gate g = W2 sigmoid(W1 x) = W2 * 0.5 = 1 on every channel.
    rg = att.g_lora.lora[0].weight.shape[0]
    att.g_lora.lora[0].weight.zero_()
    att.g_lora.lora[2].weight.fill_(2.0 / rg)
    att.g_norm.weight.fill_(1.0)
    att.g_norm.bias.zero_()
    Wo = torch.zeros(D, D)
    for h in range(2):
        for j, d in enumerate(halves[h]):
            Wo[d, h * hd + j] = p["out_scale"]
    att.o_proj.weight.copy_(Wo)
    del r

    L = torch.randn(model.lm_head.weight.shape, generator=gen) * cfg.initializer_range
    for i in val_ids:
        L[i, 2:] = E[i, 2:] / math.sqrt(D - 2)
    model.lm_head.weight.copy_(L)
    return p
