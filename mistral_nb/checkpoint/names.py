"""Layout conversion: tensor names and q/k row order, Hugging Face <-> Mistral.

Mistral layout (this package's own): ``layers.3.attention.wq.weight``, q/k rows in the interleaved
RoPE order (pairs 2i, 2i+1). Hugging Face layout: ``model.layers.3.self_attn.q_proj.weight``, q/k
rows in the rotate-half order (pairs i, i + head_dim/2). Every other tensor is the same matrix under
another name. Pure functions on names and tensors: no files here.
"""

from __future__ import annotations

import re
from typing import Dict, Optional

import torch

from ..config import ModelArgs
from ..rope import mistral_to_hf_qk

LAYOUTS = ("mistral", "hf")

_HF_LAYER = {
    "self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2", "mlp.up_proj": "feed_forward.w3",
    "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm",
}
_HF_TOP = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
           "lm_head.weight": "output.weight"}
_MISTRAL_LAYER = {v: k for k, v in _HF_LAYER.items()}
_MISTRAL_TOP = {v: k for k, v in _HF_TOP.items()}


def check_layout(layout) -> str:
    """``layout`` if it is 'mistral' or 'hf'; ValueError naming the argument otherwise."""
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"layout must be 'hf' or 'mistral', got {layout!r}")
    return layout


def hf_to_mistral_name(name: str) -> Optional[str]:
    """'model.layers.3.mlp.up_proj.weight' -> 'layers.3.feed_forward.w3.weight' (None if unknown)."""
    if name in _HF_TOP:
        return _HF_TOP[name]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", name)
    if m and m.group(2) in _HF_LAYER:
        return f"layers.{m.group(1)}.{_HF_LAYER[m.group(2)]}.weight"
    return None


def mistral_to_hf_name(name: str) -> str:
    """Inverse of ``hf_to_mistral_name``."""
    if name in _MISTRAL_TOP:
        return _MISTRAL_TOP[name]
    m = re.fullmatch(r"layers\.(\d+)\.(.+)\.weight", name)
    if not m or m.group(2) not in _MISTRAL_LAYER:
        raise KeyError(f"no Hugging Face name for {name!r}")
    return f"model.layers.{m.group(1)}.{_MISTRAL_LAYER[m.group(2)]}.weight"


def is_q_or_k(name: str) -> bool:
    return name.endswith(("attention.wq.weight", "attention.wk.weight"))


def qk_heads(name: str, args: ModelArgs) -> int:
    """How many heads the rows of a q or k matrix hold (n_heads for wq, n_kv_heads for wk)."""
    return args.n_heads if name.endswith("wq.weight") else args.n_kv_heads


def expected_shapes(args: ModelArgs) -> Dict[str, tuple]:
    """{internal name: shape} of every tensor ``Transformer(args)`` holds, from the config alone.

    Nothing is built, so a config claiming 10**7 layers costs nothing until it is compared with a
    checkpoint (which, with 21 tensors, then refuses it). Tested equal to ``Transformer``'s state_dict.
    """
    d, hd, f = args.dim, args.head_dim, args.hidden_dim
    shapes = {"tok_embeddings.weight": (args.vocab_size, d)}
    for i in range(args.n_layers):
        p = f"layers.{i}."
        shapes.update({p + "attention.wq.weight": (args.n_heads * hd, d),
                       p + "attention.wk.weight": (args.n_kv_heads * hd, d),
                       p + "attention.wv.weight": (args.n_kv_heads * hd, d),
                       p + "attention.wo.weight": (d, args.n_heads * hd),
                       p + "feed_forward.w1.weight": (f, d), p + "feed_forward.w2.weight": (d, f),
                       p + "feed_forward.w3.weight": (f, d),
                       p + "attention_norm.weight": (d,), p + "ffn_norm.weight": (d,)})
    shapes.update({"norm.weight": (d,), "output.weight": (args.vocab_size, d)})
    return shapes


TENSORS_PER_LAYER, TENSORS_OUTSIDE_LAYERS = 9, 3


def state_dict_for_layout(state: Dict[str, torch.Tensor], args: ModelArgs, layout: str) -> Dict[str, torch.Tensor]:
    """Convert a state dict in this package's (Mistral) naming and layout to ``layout`` ('hf' or 'mistral')."""
    if check_layout(layout) == "mistral":
        return {k: v.contiguous() for k, v in state.items()}
    out = {}
    for k, v in state.items():
        if is_q_or_k(k):
            v = mistral_to_hf_qk(v, qk_heads(k, args))
        out[mistral_to_hf_name(k)] = v.contiguous()
    return out
