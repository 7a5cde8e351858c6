"""Constructed ("recall circuit") initialisation of the shipped tiny Qwen3-Next hybrid.

Training from a random init never got past the associative-recall plateau within a CPU budget
(see ``docs/models.md``). This module writes, into one Gated DeltaNet layer, the textbook
delta-rule lookup, so the model recalls at step 0 and training only has to learn the rest
(formats, the newline after an answer, arithmetic, copying) without destroying it:

* **Residual layout** (hidden 128): dim 0 is a constant (1 for every token), dim 1 flags value
  tokens (``00``..``99`` and the digits ``0``..``9``), dims 2..127 carry a random Gaussian code per
  key word and, superposed, per value word; other tokens get small random codes.
* **Short convolution as a shift**: the query and value channels take the current token, the key
  channels the *previous* one. At a value token ``v`` right after its key ``k`` the layer writes
  ``code(k) -> code(v)``; at a query ``? k`` it reads with ``code(k)``.
* **Write gate**: ``beta = sigmoid(+6)`` on value tokens, ``sigmoid(-6)`` elsewhere, so only
  ``key value`` pairs are written (an overwrite of a key replaces its value: the delta rule).
* **No forgetting**: ``A = 1``, ``softplus(dt_bias) = 1e-5``, ``a`` projection zero.
* **Two heads**, each on its own half of the code (dims 2..64 and 65..127): two independent
  noisy recalls whose outputs are written back into the value code's halves and read by
  ``lm_head`` (its rows for value words are their codes).
* Output gate ``z`` constant (reads dim 0), gated-norm weight 1.
* Every other write to the residual (attention ``o_proj``, every MoE and shared-expert
  ``down_proj``, the other GDN layers' ``out_proj``) starts at zero; the rest keeps the default
  init, so all of it is trainable from step 0.

The recall therefore runs through the chunked delta rule of the GDN layer, i.e. through the
triangular inverse ``(I + beta K K^T)^-1`` (strictly lower part) of every 64-token chunk, with
``beta`` near 1 and keys that overlap (100 keys in 63 dimensions per head): the inverse's
precision decides the answer. Scales (``s_qk``, ``s_v``) keep the convolution's SiLU near its
linear range.
"""

from __future__ import annotations

import math

import torch

from deltainv.eval.tasks import synthetic

#: Parameters of the construction, recorded in ``training.json``.
DEFAULTS = dict(layer=1, s_qk=0.05, s_v=0.3, beta_logit=6.0, out_scale=3.0, decay_dt=1e-5,
                other_code_std=0.3, z_gate=3.0)


def describe(params: dict) -> str:
    return ("recall circuit written into GDN layer {layer} (see models/recall_init.py): shift conv "
            "(q, v = current token x {s_qk}/{s_v}, k = previous token x {s_qk}), beta logit +-{beta_logit} on "
            "value/other tokens, A = 1, dt = {decay_dt}, random Gaussian key/value codes in dims 2..127 "
            "(2 heads on the two halves), out_proj x {out_scale}, lm_head rows = value codes; "
            "attention o_proj, MoE down_proj and other GDN out_proj zero").format(**params)


def single_token(tok, word: str) -> int:
    """The id of ``word``, which must be one token of the shared tokenizer."""
    ids = tok.encode(word).ids
    if len(ids) != 1:
        raise ValueError(f"{word!r} is not one token: {ids}")
    return ids[0]


@torch.no_grad()
def apply(model, tok, gen: torch.Generator, **overrides) -> dict:
    """Write the recall circuit into ``model`` (a fresh ``Qwen3NextForCausalLM``); returns the
    parameters used."""
    p = {**DEFAULTS, **overrides}
    cfg = model.config
    D = cfg.hidden_size
    H = cfg.linear_num_key_heads
    dk = cfg.linear_key_head_dim
    if not (D == 128 and H == 2 and cfg.linear_num_value_heads == 2 and dk == cfg.linear_value_head_dim):
        raise ValueError("the construction assumes hidden 128 and 2 GDN key/value heads of equal width")
    if cfg.layer_types[p["layer"]] != "linear_attention":
        raise ValueError(f"layer {p['layer']} is not a GDN layer")
    BIAS, FLAG = 0, 1
    halves = [list(range(2, 65)), list(range(65, D))]
    V = model.model.embed_tokens.weight.shape[0]

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
    model.model.embed_tokens.weight.copy_(E)

    for li, layer in enumerate(model.model.layers):
        if hasattr(layer, "self_attn"):
            layer.self_attn.o_proj.weight.zero_()
        if hasattr(layer, "linear_attn") and li != p["layer"]:
            layer.linear_attn.out_proj.weight.zero_()
        for m in layer.mlp.modules():
            dp = getattr(m, "down_proj", None)
            if isinstance(dp, torch.nn.Parameter):
                dp.zero_()
            elif dp is not None:
                dp.weight.zero_()

    gdn = model.model.layers[p["layer"]].linear_attn
    W = torch.zeros_like(gdn.in_proj_qkvz.weight)  # per key head: [q, k, v, z] blocks of dk rows
    grp = W.shape[0] // H
    for h in range(H):
        o = h * grp
        for j, d in enumerate(halves[h]):
            W[o + j, d] = 1.0
            W[o + dk + j, d] = 1.0
            W[o + 2 * dk + j, d] = 1.0
        W[o + 3 * dk:o + 4 * dk, BIAS] = p["z_gate"]
    gdn.in_proj_qkvz.weight.copy_(W)
    Wba = torch.zeros_like(gdn.in_proj_ba.weight)  # per head: [b, a]
    for h in range(H):
        Wba[2 * h, BIAS] = -p["beta_logit"]
        Wba[2 * h, FLAG] = 2 * p["beta_logit"]
    gdn.in_proj_ba.weight.copy_(Wba)
    cw = torch.zeros_like(gdn.conv1d.weight)  # [q | k | v channels, 1, kernel]; last tap = current
    kd = H * dk
    cw[:kd, 0, -1] = p["s_qk"]
    cw[kd:2 * kd, 0, -2] = p["s_qk"]
    cw[2 * kd:, 0, -1] = p["s_v"]
    gdn.conv1d.weight.copy_(cw)
    gdn.A_log.zero_()
    gdn.dt_bias.fill_(math.log(math.expm1(p["decay_dt"])))
    gdn.norm.weight.fill_(1.0)
    Wo = torch.zeros_like(gdn.out_proj.weight)
    for h in range(H):
        for j, d in enumerate(halves[h]):
            Wo[d, h * dk + j] = p["out_scale"]
    gdn.out_proj.weight.copy_(Wo)

    L = torch.randn(model.lm_head.weight.shape, generator=gen) * cfg.initializer_range
    for i in val_ids:
        L[i, 2:] = E[i, 2:] / math.sqrt(D - 2)
    model.lm_head.weight.copy_(L)
    return p


def describe_kda(params: dict) -> str:
    return ("recall circuit written into KDA layer {layer} (see models/recall_init.py apply_kda): shift conv "
            "(q, v = current token x {s_qk}/{s_v}, k = previous token x {s_qk}), beta logit +-{beta_logit} on "
            "value/other tokens, per-channel forget gate A = 1, dt = {decay_dt} (f_a/f_b zero), random Gaussian "
            "key/value codes in dims 2..127 (2 heads on the two halves), output gate sigmoid({z_gate}), "
            "o_proj x {out_scale}, lm_head rows = value codes; MLA o_proj, every MLP/MoE down_proj and other "
            "KDA o_proj zero").format(**params)


def _codes(model, tok, gen: torch.Generator, p: dict) -> tuple[torch.Tensor, list[int]]:
    """The embedding table of the construction (see the module docstring) and the value token ids."""
    D = model.config.hidden_size
    V = model.model.embed_tokens.weight.shape[0]
    key_ids = [single_token(tok, " " + k) for k in synthetic.KEYS]
    val_ids = [single_token(tok, " " + v) for v in synthetic.VALUES + synthetic.DIGITS]
    E = torch.randn(V, D, generator=gen) * p["other_code_std"]
    E[:, 0] = 1.0
    E[:, 1] = 0.0
    for i in key_ids:
        E[i, 2:] = torch.randn(D - 2, generator=gen)
    for i in val_ids:
        E[i, 2:] = torch.randn(D - 2, generator=gen)
        E[i, 1] = 1.0
    return E, val_ids


@torch.no_grad()
def apply_kda(model, tok, gen: torch.Generator, **overrides) -> dict:
    """The same recall circuit in one Kimi Delta Attention layer of a fresh ``KimiLinearForCausalLM``.

    KDA's layer differs from GDN's in its parameter names (separate ``q/k/v_proj``, ``b_proj``, a
    low-rank per-channel ``forget_gate`` and output gate ``g_a/g_b_proj``, a sigmoid-gated norm) and
    in its gate being per channel; the construction writes the same lookup: no forgetting on any
    channel (``A_log = 0``, ``f_a/f_b = 0``, ``softplus(dt_bias) = decay_dt``), beta on value tokens only,
    keys from the previous token through the short convolution. Returns the parameters used.
    """
    p = {**DEFAULTS, **overrides}
    cfg = model.config
    D, H, dk = cfg.hidden_size, cfg.linear_num_heads, cfg.linear_head_dim
    if not (D == 128 and H == 2 and dk == 64):
        raise ValueError("the construction assumes hidden 128 and 2 KDA heads of 64")
    if cfg.layer_types[p["layer"]] != "linear_attention":
        raise ValueError(f"layer {p['layer']} is not a KDA layer")
    BIAS, FLAG = 0, 1
    halves = [list(range(2, 65)), list(range(65, D))]
    E, val_ids = _codes(model, tok, gen, p)
    model.model.embed_tokens.weight.copy_(E)

    for li, layer in enumerate(model.model.layers):
        if li != p["layer"]:
            layer.self_attn.o_proj.weight.zero_()  # MLA and the other KDA layers write nothing yet
        for m in layer.mlp.modules():
            dp = getattr(m, "down_proj", None)
            if isinstance(dp, torch.nn.Parameter):
                dp.zero_()
            elif dp is not None:
                dp.weight.zero_()

    kda = model.model.layers[p["layer"]].self_attn
    for proj in (kda.q_proj, kda.k_proj, kda.v_proj):  # [H * dk, D]: head h reads half h
        W = torch.zeros_like(proj.weight)
        for h in range(H):
            for j, d in enumerate(halves[h]):
                W[h * dk + j, d] = 1.0
        proj.weight.copy_(W)
    qkv = H * dk
    cw = torch.zeros_like(kda.conv1d.weight)  # [q | k | v channels, 1, kernel]; last tap = current
    cw[:qkv, 0, -1] = p["s_qk"]
    cw[qkv:2 * qkv, 0, -2] = p["s_qk"]
    cw[2 * qkv:, 0, -1] = p["s_v"]
    kda.conv1d.weight.copy_(cw)
    Wb = torch.zeros_like(kda.b_proj.weight)  # [H, D]
    Wb[:, BIAS] = -p["beta_logit"]
    Wb[:, FLAG] = 2 * p["beta_logit"]
    kda.b_proj.weight.copy_(Wb)
    fg = kda.forget_gate
    fg.f_a_proj.weight.zero_()
    fg.f_b_proj.weight.zero_()
    fg.A_log.zero_()
    fg.dt_bias.fill_(math.log(math.expm1(p["decay_dt"])))
    ga = torch.zeros_like(kda.g_a_proj.weight)  # [dk, D]: one rank reads the constant dim
    ga[0, BIAS] = 1.0
    kda.g_a_proj.weight.copy_(ga)
    gb = torch.zeros_like(kda.g_b_proj.weight)  # [H * dk, dk]
    gb[:, 0] = p["z_gate"]
    kda.g_b_proj.weight.copy_(gb)
    kda.o_norm.weight.fill_(1.0)
    Wo = torch.zeros_like(kda.o_proj.weight)
    for h in range(H):
        for j, d in enumerate(halves[h]):
            Wo[d, h * dk + j] = p["out_scale"]
    kda.o_proj.weight.copy_(Wo)

    L = torch.randn(model.lm_head.weight.shape, generator=gen) * cfg.initializer_range
    for i in val_ids:
        L[i, 2:] = E[i, 2:] / math.sqrt(D - 2)
    model.lm_head.weight.copy_(L)
    return p
