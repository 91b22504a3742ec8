"""GGUF, the file llama.cpp runs: write a Mistral model as one, read its header back.

A GGUF file (version 3, little-endian; ``docs/gguf.md`` in ggml's repository) is::

    "GGUF" | version u32 | tensor count u64 | key-value count u64
    key-values:   key (u64 length + UTF-8) | value type u32 | value      (arrays: item type u32, count u64, items)
    tensor infos: name | n_dims u32 | dims u64 x n_dims (innermost first) | ggml type u32 | offset u64
    padding to 32 bytes, then every tensor's bytes, each starting at a multiple of 32

The model is written under llama.cpp's ``llama`` architecture, as llama.cpp's own converter writes
Mistral 7B v0.1 (``LlamaModel``, which serves ``MistralForCausalLM``): its metadata keys, the tensor
names ``token_embd``, ``blk.N.attn_q`` ..., and the tokenizer as sentencepiece pieces, scores and
types. Two facts decide whether llama.cpp computes the same function:

* **q/k rows.** llama.cpp rotates adjacent pairs (2i, 2i + 1), the order of Mistral's own checkpoints
  and of this package; its converter permutes Hugging Face's rotate-half rows back into that order.
  Written from this package's weights, q and k go in unchanged.
* **the window.** The ``llama`` architecture reads no sliding-window key; the converter writes none,
  and llama.cpp attends over the whole context. Logits agree below the window and part beyond it
  (``benchmarks/llamacpp_window.py`` measures by how much).

``quant``: 'F32', 'F16', 'BF16' (every matrix in that type) or 'Q8_0', 'Q4_0' (the blocks' seven linear
weights quantized; the embedding and the output head in ``float_type`` unless listed in ``quantize_also``).
Norm weights are always F32, as the converter writes them.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

from ..config import ModelArgs
from .gguf_blocks import GGML_TYPES, encode, encoded_nbytes
from .names import expected_shapes

__all__ = ["save_gguf", "convert_to_gguf", "read_gguf", "gguf_name", "gguf_metadata", "tensor_types",
           "QUANTS", "FILE_TYPES"]

MAGIC, VERSION, ALIGNMENT = b"GGUF", 3, 32
QUANTS = ("F32", "F16", "BF16", "Q8_0", "Q4_0")
FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7, "BF16": 32}          # enum llama_ftype
U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10                 # enum gguf_type
_PACK = {U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q"}
_TYPE_NAMES = {v: k for k, v in GGML_TYPES.items()}
_LAYER = {"attention_norm": "attn_norm", "attention.wq": "attn_q", "attention.wk": "attn_k", "attention.wv": "attn_v",
          "attention.wo": "attn_output", "ffn_norm": "ffn_norm", "feed_forward.w1": "ffn_gate",
          "feed_forward.w2": "ffn_down", "feed_forward.w3": "ffn_up"}
_TOP = {"tok_embeddings.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
        "output.weight": "output.weight"}


def gguf_name(name: str) -> str:
    """This package's tensor name -> llama.cpp's ('layers.3.feed_forward.w1.weight' -> 'blk.3.ffn_gate.weight')."""
    if name in _TOP:
        return _TOP[name]
    parts = name.split(".")
    if parts[0] == "layers" and parts[-1] == "weight" and ".".join(parts[2:-1]) in _LAYER:
        return f"blk.{parts[1]}.{_LAYER['.'.join(parts[2:-1])]}.weight"
    raise KeyError(f"no GGUF name for tensor {name!r}")


def tensor_types(args: ModelArgs, quant: str, float_type: str = "F16",
                 quantize_also: Iterable[str] = ()) -> dict:
    """{tensor name: GGUF type} for every tensor of ``Transformer(args)``."""
    if quant not in QUANTS:
        raise ValueError(f"quant must be one of {QUANTS}, got {quant!r}")
    if float_type not in ("F32", "F16", "BF16"):
        raise ValueError(f"float_type must be 'F32', 'F16' or 'BF16', got {float_type!r}")
    also = tuple(quantize_also)
    unknown = [n for n in also if n not in ("tok_embeddings", "output")]
    if unknown:
        raise ValueError(f"quantize_also may name 'tok_embeddings' and 'output', got {unknown[0]!r}")
    types = {}
    for name, shape in expected_shapes(args).items():
        top = name.split(".")[0]
        if len(shape) == 1:
            types[name] = "F32"
        elif quant in ("F32", "F16", "BF16") or top in ("layers",) or top in also:
            types[name] = quant
        else:
            types[name] = float_type
    return types


def _vocabulary(tokenizer) -> Optional[tuple]:
    """(pieces, scores, types) of a sentencepiece tokenizer, as the converter reads them, or None."""
    if tokenizer is None:
        return None
    from ..tokenizer import Tokenizer
    from ..tokenizer.model_file import mistral_v1_model_bytes, parse_model_proto

    if tokenizer == "mistral_v1":
        data = mistral_v1_model_bytes()
    elif isinstance(tokenizer, Tokenizer):
        data = tokenizer.sp.serialized_model_proto()
    else:
        raise TypeError(f"tokenizer must be a Tokenizer, 'mistral_v1' or None, got {tokenizer!r}")
    spec = parse_model_proto(data)
    return spec.pieces, spec.scores, [int(t) for t in spec.types]


def gguf_metadata(args: ModelArgs, quant: str, tokenizer="mistral_v1", name: str = "Mistral-7B-v0.1") -> list:
    """The key-values, in the converter's order: [(key, gguf type, value)]; arrays as (ARRAY, (item type, list))."""
    kv = [("general.architecture", STRING, "llama"), ("general.type", STRING, "model"),
          ("general.name", STRING, name), ("llama.block_count", U32, args.n_layers),
          ("llama.context_length", U32, 32768), ("llama.embedding_length", U32, args.dim),
          ("llama.feed_forward_length", U32, args.hidden_dim), ("llama.attention.head_count", U32, args.n_heads),
          ("llama.attention.head_count_kv", U32, args.n_kv_heads), ("llama.rope.freq_base", F32, args.rope_theta),
          ("llama.attention.layer_norm_rms_epsilon", F32, args.norm_eps),
          ("llama.attention.key_length", U32, args.head_dim), ("llama.attention.value_length", U32, args.head_dim),
          ("general.file_type", U32, FILE_TYPES[quant]), ("llama.vocab_size", U32, args.vocab_size),
          ("llama.rope.dimension_count", U32, args.head_dim), ("general.quantization_version", U32, 2)]
    vocab = _vocabulary(tokenizer)
    if vocab is None:
        return kv + [("tokenizer.ggml.model", STRING, "none")]   # llama.cpp then makes vocab_size dummy tokens
    pieces, scores, types = vocab
    if len(pieces) != args.vocab_size:
        raise ValueError(f"the tokenizer has {len(pieces)} pieces but the model's vocab_size is {args.vocab_size}")
    return kv + [("tokenizer.ggml.model", STRING, "llama"), ("tokenizer.ggml.pre", STRING, "default"),
                 ("tokenizer.ggml.tokens", ARRAY, (STRING, pieces)), ("tokenizer.ggml.scores", ARRAY, (F32, scores)),
                 ("tokenizer.ggml.token_type", ARRAY, (I32, types)), ("tokenizer.ggml.bos_token_id", U32, 1),
                 ("tokenizer.ggml.eos_token_id", U32, 2), ("tokenizer.ggml.unknown_token_id", U32, 0),
                 ("tokenizer.ggml.add_bos_token", BOOL, True), ("tokenizer.ggml.add_eos_token", BOOL, False)]


def _string(s) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return struct.pack("<Q", len(b)) + b


def _value(kind: int, value) -> bytes:
    if kind == STRING:
        return _string(value)
    if kind == ARRAY:
        item, items = value
        if item == STRING:
            body = b"".join(_string(v) for v in items)
        else:
            body = struct.pack(f"<{len(items)}{_PACK[item][1]}", *items)
        return struct.pack("<IQ", item, len(items)) + body
    return struct.pack(_PACK[kind], value)


def _pad(n: int) -> int:
    return (ALIGNMENT - n % ALIGNMENT) % ALIGNMENT


def _header(kv: list, infos: list) -> bytes:
    """Everything before the tensor data: magic, counts, key-values, tensor infos, padding."""
    out = [MAGIC, struct.pack("<IQQ", VERSION, len(infos), len(kv))]
    out += [_string(key) + struct.pack("<I", kind) + _value(kind, value) for key, kind, value in kv]
    offset = 0
    for name, shape, kind in infos:
        dims = list(reversed(shape))                           # ggml's ne: the innermost (row) length first
        out.append(_string(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, GGML_TYPES[kind], offset))
        nbytes = encoded_nbytes(shape, kind)
        offset += nbytes + _pad(nbytes)
    head = b"".join(out)
    return head + bytes(_pad(len(head)))


def _write(path: Path, kv: list, order: list, types: dict, fetch: Callable[[str], torch.Tensor]) -> Path:
    """Write the file to a temporary name beside ``path``, then rename it into place."""
    infos = [(gguf_name(name), shape, types[name]) for name, shape in order]
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(_header(kv, infos))
            for (name, _), (gname, _, kind) in zip(order, infos):
                data = encode(fetch(name), kind, name).numpy()
                f.write(memoryview(data))
                f.write(bytes(_pad(data.nbytes)))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_path(path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"a GGUF checkpoint is one file; {path} is a directory (give e.g. {path / 'model.gguf'})")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _plan_file(path, args: ModelArgs, quant: str, tokenizer, float_type: str, quantize_also, name: str):
    """What both writers settle before any tensor: the checked path, each tensor's GGUF type, the metadata
    (``tokenizer='auto'``: Mistral v0.1's when the vocabulary has 32,000 entries, else none)."""
    path = _check_path(path)
    types = tensor_types(args, quant, float_type, quantize_also)
    if tokenizer == "auto":
        tokenizer = "mistral_v1" if args.vocab_size == 32000 else None
    return path, types, gguf_metadata(args, quant, tokenizer, name)


def save_gguf(model, path, quant: str = "F16", tokenizer="auto", float_type: str = "F16",
              quantize_also: Iterable[str] = (), name: str = "Mistral-7B-v0.1") -> Path:
    """Write ``model`` (a ``Transformer``; int8/int4/packed layers as the float matrices they multiply by)
    as the GGUF file ``path``, replaced atomically. ``tokenizer``: 'auto' (Mistral v0.1's when the
    vocabulary has 32,000 entries, else none), 'mistral_v1', a ``Tokenizer``, or None."""
    from ..speed.formats import LinearFormat, linear_weight

    args = getattr(model, "args", None)
    if not isinstance(args, ModelArgs):
        raise TypeError(f"save_gguf expects a Transformer, got {type(model).__name__}")
    path, types, kv = _plan_file(path, args, quant, tokenizer, float_type, quantize_also, name)

    def fetch(tensor_name: str) -> torch.Tensor:
        module_name, _, leaf = tensor_name.rpartition(".")
        module = model.get_submodule(module_name)
        t = linear_weight(module, torch.float32) if isinstance(module, LinearFormat) else getattr(module, leaf).detach().float()
        if t.is_meta:
            raise ValueError(f"tensor {tensor_name!r} is on the meta device: load the weights before saving")
        return t.cpu()

    return _write(path, kv, list(expected_shapes(args).items()), types, fetch)


def convert_to_gguf(src, path, quant: str = "F16", tokenizer="auto", float_type: str = "F16",
                    quantize_also: Iterable[str] = (), name: str = "Mistral-7B-v0.1") -> Path:
    """Convert the checkpoint directory ``src`` (either layout) to the GGUF file ``path``, one tensor in
    memory at a time (a 7B checkpoint needs no model in RAM)."""
    from ..rope import hf_to_mistral_qk
    from .loading import check_finite, plan_checkpoint
    from .names import is_q_or_k, qk_heads
    from .safetensors_file import read_tensor

    layout, args, plan = plan_checkpoint(src)
    path, types, kv = _plan_file(path, args, quant, tokenizer, float_type, quantize_also, name)

    def fetch(tensor_name: str) -> torch.Tensor:
        info = plan[tensor_name]
        t = read_tensor(info)
        check_finite(t, info)
        if layout == "hf" and is_q_or_k(tensor_name):
            t = hf_to_mistral_qk(t, qk_heads(tensor_name, args))
        return t

    order = sorted(plan, key=lambda n: (str(plan[n].file), plan[n].start))     # sequential reads
    return _write(path, kv, [(n, plan[n].shape) for n in order], types, fetch)


def _read_string(f) -> str:
    (n,) = struct.unpack("<Q", f.read(8))
    return f.read(n).decode("utf-8")


def _read_value(f, kind: int):
    if kind == STRING:
        return _read_string(f)
    if kind == ARRAY:
        item, count = struct.unpack("<IQ", f.read(12))
        return [_read_value(f, item) for _ in range(count)]
    fmt = _PACK.get(kind) or {0: "<B", 1: "<b", 2: "<H", 3: "<h", 11: "<q", 12: "<d"}[kind]
    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def read_gguf(path) -> tuple[dict, dict]:
    """(metadata {key: value}, tensors {name: (shape in torch's order, type name, byte offset in the file)})
    of a GGUF file, from its header alone. ValueError naming the file if it is not GGUF version 2 or 3."""
    with open(path, "rb") as f:
        magic, version = f.read(4), struct.unpack("<I", f.read(4))[0]
        if magic != MAGIC or version not in (2, 3):
            raise ValueError(f"{path}: not a GGUF file (magic {magic!r}, version {version})")
        n_tensors, n_kv = struct.unpack("<QQ", f.read(16))
        meta = {}
        for _ in range(n_kv):
            key = _read_string(f)
            (kind,) = struct.unpack("<I", f.read(4))
            meta[key] = _read_value(f, kind)
        tensors = {}
        for _ in range(n_tensors):
            name = _read_string(f)
            (n_dims,) = struct.unpack("<I", f.read(4))
            dims = struct.unpack(f"<{n_dims}Q", f.read(8 * n_dims))
            kind, offset = struct.unpack("<IQ", f.read(12))
            tensors[name] = (tuple(reversed(dims)), _TYPE_NAMES.get(kind, str(kind)), offset)
        align = meta.get("general.alignment", ALIGNMENT)
        start = f.tell() + (align - f.tell() % align) % align               # the data section
    return meta, {name: (shape, kind, start + offset) for name, (shape, kind, offset) in tensors.items()}
