"""Every count in one place: parameters, bytes of weights, bytes read per token, KV-cache bytes, FLOPs.

All of them follow from a ``ModelArgs`` alone (nothing is built, so a config claiming 10**7 layers
costs no memory), except ``model_nbytes`` and ``decode_bytes_per_token``, which sum the tensors a
built model holds (on the meta device too) and are tested equal to the config's counts.

Forward pass costs: a pass over ``tokens`` new tokens of ``batch`` sequences does, per token, about
two floating-point operations for every weight it multiplies by (a multiply and an add: "2N"), plus
the attention scores and the weighted sum of values (four per query-key pair per head channel). It
must read every weight once per pass (whatever the batch) and the cached keys and values of every
sequence. ``Cost`` holds both; ``speed.roofline.Machine`` turns them into a time.
Activations, which stay small next to the weights at these sizes, are not counted.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .config import ModelArgs

QUANTIZED_FORMATS = (None, "int8", "int4", "int4_zp", "int4_g128", "int4_g128_zp")   # int4: speed/int4.py's INT4_MODES


def _ints(where: str, low: int = 0, **values) -> None:
    """ValueError naming the argument unless every value is an int >= ``low`` (a count of tokens, bytes,
    sequences: a negative one would give a negative count without a word)."""
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
            raise ValueError(f"{where}: {name} must be an int >= {low}, got {v!r}")


def _config(where: str, args) -> None:
    if not isinstance(args, ModelArgs):
        raise TypeError(f"{where}: args must be a ModelArgs, got {type(args).__name__}")


# ---------------------------------------------------------------- parameters
def parameter_counts(args: ModelArgs) -> dict:
    """Parameters per component, from the configuration alone (no model built)."""
    attention = args.dim * args.head_dim * (2 * args.n_heads + 2 * args.n_kv_heads)    # wq, wo + wk, wv
    return {"feed-forward (SwiGLU)": args.n_layers * 3 * args.dim * args.hidden_dim,
            "attention (wq wk wv wo)": args.n_layers * attention,
            "embeddings": args.vocab_size * args.dim,
            "output head": args.vocab_size * args.dim,
            "RMSNorm weights": (2 * args.n_layers + 1) * args.dim}


def parameter_count(args: ModelArgs) -> int:
    """All parameters of ``Transformer(args)`` (7,241,732,096 for Mistral 7B)."""
    return sum(parameter_counts(args).values())


def matmul_params(args: ModelArgs) -> int:
    """Parameters a token is multiplied by: every weight matrix of the blocks and the output head.
    (The embedding table is looked up, not multiplied; the norm gains are element-wise.)"""
    c = parameter_counts(args)
    return c["feed-forward (SwiGLU)"] + c["attention (wq wk wv wo)"] + c["output head"]


def block_linear_rows(args: ModelArgs) -> int:
    """Output channels of the blocks' seven linear layers (wq wk wv wo w1 w2 w3) over all layers:
    the number of per-row scales int8 weights need."""
    hd, d, f = args.head_dim, args.dim, args.hidden_dim
    return args.n_layers * (hd * (args.n_heads + 2 * args.n_kv_heads) + 2 * d + 2 * f)


# ---------------------------------------------------------------- bytes of weights
def weights_nbytes(args: ModelArgs, bytes_per_value: int = 2, quantize: Optional[str] = None) -> int:
    """Bytes of the weights of ``Transformer(args)``, ``bytes_per_value`` per float.

    ``quantize='int8'``: the blocks' linear weights as one byte each plus one float scale per output
    channel; ``'int4'`` (group 32) or ``'int4_g128'`` (group 128), with ``_zp`` or not: half a byte each
    plus a float scale and a float offset per group (both are stored: PyTorch's int4 kernel reads the
    pair). The embedding, the output head and the norms stay in floating point."""
    if quantize not in QUANTIZED_FORMATS:
        raise ValueError(f"quantize must be one of {QUANTIZED_FORMATS}, got {quantize!r}")
    c = parameter_counts(args)
    linear = c["feed-forward (SwiGLU)"] + c["attention (wq wk wv wo)"]
    rest = c["embeddings"] + c["output head"] + c["RMSNorm weights"]
    if quantize == "int8":
        return rest * bytes_per_value + linear + block_linear_rows(args) * bytes_per_value
    if quantize is not None:                                  # int4: 4 bits + (scale, zero) per group
        group = 128 if quantize.startswith("int4_g128") else 32
        return rest * bytes_per_value + linear // 2 + 2 * (linear // group) * bytes_per_value
    return (rest + linear) * bytes_per_value


def weights_read_per_token(args: ModelArgs, bytes_per_value: int = 2, quantize: Optional[str] = None) -> int:
    """Bytes of weights one batch-1 decode step reads: every parameter once, except that the
    embedding table contributes only the one row of the token being fed in."""
    return weights_nbytes(args, bytes_per_value, quantize) - (args.vocab_size - 1) * args.dim * bytes_per_value


def dtype_bytes(dtype: torch.dtype) -> int:
    """Bytes per value of a torch dtype (2 for bfloat16)."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype_bytes: dtype must be a torch.dtype such as torch.bfloat16, got {dtype!r}")
    return torch.empty((), dtype=dtype).element_size()


def model_nbytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer a built model holds (works on the meta device)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def decode_bytes_per_token(model: nn.Module) -> int:
    """Bytes of weights one batch-1 decode step of a built model reads (its own formats: int8, packed,
    float): every parameter and buffer once, except the embedding table, of which one row."""
    emb = model.tok_embeddings.weight
    return model_nbytes(model) - (emb.shape[0] - 1) * emb.shape[1] * emb.element_size()


# ---------------------------------------------------------------- the KV cache
def kv_bytes_per_token(args: ModelArgs, bytes_per_value: int = 2) -> int:
    """Bytes of keys and values one token adds to the cache: layers x 2 x kv heads x head_dim x bytes
    (131,072 for Mistral 7B in bf16)."""
    return args.n_layers * 2 * args.n_kv_heads * args.head_dim * bytes_per_value


def kv_cache_bytes(args: ModelArgs, seq_len: int, bytes_per_value: int = 2, rolling: bool = True,
                   batch_size: int = 1) -> int:
    """Bytes a KV cache needs for ``seq_len`` tokens of ``batch_size`` sequences: min(seq_len, W)
    tokens per sequence when ``rolling`` (a rolling buffer of W slots), seq_len otherwise."""
    tokens = min(seq_len, args.sliding_window) if (rolling and args.sliding_window) else seq_len
    return batch_size * tokens * kv_bytes_per_token(args, bytes_per_value)


def sequences_that_fit(args: ModelArgs, memory_bytes: float, seq_len: int, bytes_per_value: int = 2,
                       rolling: bool = True) -> int:
    """How many sequences of ``seq_len`` tokens fit in ``memory_bytes`` beside the weights (batch
    capacity): (memory - weights) // KV-cache bytes of one sequence; 0 when the weights alone do not fit."""
    _ints("sequences_that_fit", 1, seq_len=seq_len)
    free = memory_bytes - weights_nbytes(args, bytes_per_value)
    per_seq = kv_cache_bytes(args, seq_len, bytes_per_value, rolling=rolling)
    return max(0, int(free // per_seq))


# ---------------------------------------------------------------- attention's own memory
def score_matrix_bytes(batch: int, heads: int, seq_len: int, keys: Optional[int] = None,
                       bytes_per_value: int = 4) -> int:
    """Bytes of the (S, T) score matrix ordinary attention writes for every head (the softmax
    writes a second matrix of the same size)."""
    return batch * heads * seq_len * (seq_len if keys is None else keys) * bytes_per_value


def flash_state_bytes(batch: int, heads: int, seq_len: int, block_q: int = 64, block_k: int = 64,
                      bytes_per_value: int = 4) -> int:
    """Bytes the tiled pass keeps besides its output: the running max and sum of every query (2 per
    query and head) and one (block_q, block_k) tile of scores per head in flight."""
    return batch * heads * (2 * seq_len + block_q * block_k) * bytes_per_value


# ---------------------------------------------------------------- FLOPs and bytes of a forward pass
def keys_seen(args: ModelArgs, past: int, tokens: int) -> int:
    """Query-key pairs of ``tokens`` new tokens at positions past .. past + tokens - 1, each seeing
    the min(position + 1, W) most recent positions, itself included."""
    _config("keys_seen", args)
    _ints("keys_seen", 0, past=past, tokens=tokens)
    W = args.sliding_window
    first, last = past + 1, past + tokens            # keys seen by a position p: p + 1, capped at W
    if W is None or last <= W:
        return (first + last) * tokens // 2
    if first > W:
        return W * tokens
    return (first + W) * (W - first + 1) // 2 + W * (last - W)


@dataclass(frozen=True)
class Cost:
    """The work of one forward pass: FLOPs and bytes read or written from memory."""
    flops: float
    bytes: float
    tokens: int = 1          # new tokens the pass produces logits for (all sequences together)

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOP per byte."""
        return self.flops / self.bytes

    def seconds(self, machine) -> float:
        """The least time ``machine`` (a ``speed.roofline.Machine``) needs: the larger of compute
        time and memory time."""
        return max(self.flops / machine.peak_flops, self.bytes / machine.bandwidth)

    def bound(self, machine) -> str:
        """'memory' below the machine's ridge point, 'compute' above it."""
        return "memory" if self.intensity < machine.ridge else "compute"

    def tokens_per_second(self, machine) -> float:
        """The ceiling on tokens per second this pass allows on ``machine``."""
        return self.tokens / self.seconds(machine)


def forward_cost(args: ModelArgs, tokens: int, batch: int = 1, past: int = 0,
                 bytes_per_value: int = 2) -> Cost:
    """FLOPs and bytes of one forward pass over ``tokens`` new tokens in each of ``batch`` sequences
    that already hold ``past`` tokens in a rolling cache.

    FLOPs: 2 x matmul_params per token (the "2N" rule) plus 4 x layers x heads x head_dim per
    query-key pair (scores and weighted values). Bytes: every weight once (one embedding row per
    token instead of the table), the cached keys and values every sequence attends to (at most W
    positions), and the new tokens' keys and values written to the cache.
    """
    n = tokens * batch
    attn = 4 * args.n_layers * args.n_heads * args.head_dim * keys_seen(args, past, tokens) * batch
    flops = 2 * matmul_params(args) * n + attn
    weights = weights_read_per_token(args, bytes_per_value) + (n - 1) * args.dim * bytes_per_value
    cached = past if args.sliding_window is None else min(past, args.sliding_window)
    kv = batch * (cached + tokens) * kv_bytes_per_token(args, bytes_per_value)
    return Cost(float(flops), float(weights + kv), tokens=n)


def decode_cost(args: ModelArgs, batch: int = 1, context: int = 0, bytes_per_value: int = 2) -> Cost:
    """One decode step: one new token for each of ``batch`` sequences with ``context`` tokens so far."""
    return forward_cost(args, 1, batch=batch, past=context, bytes_per_value=bytes_per_value)


def prefill_cost(args: ModelArgs, seq_len: int, batch: int = 1, bytes_per_value: int = 2,
                 chunk: Optional[int] = None) -> Cost:
    """A prompt of ``seq_len`` tokens prefilled in chunks of ``chunk`` (default W) tokens: the sum
    of the passes (each chunk reads the weights again)."""
    _ints("prefill_cost", 1, seq_len=seq_len, **({} if chunk is None else {"chunk": chunk}))
    chunk = chunk or args.sliding_window or seq_len
    flops = nbytes = 0.0
    for c0 in range(0, seq_len, chunk):
        c = forward_cost(args, min(chunk, seq_len - c0), batch=batch, past=c0, bytes_per_value=bytes_per_value)
        flops, nbytes = flops + c.flops, nbytes + c.bytes
    return Cost(flops, nbytes, tokens=seq_len * batch)


# ---------------------------------------------------------------- fine-tuning: trainable parameters and memory
BLOCK_LINEARS = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


def linear_shapes(args: ModelArgs) -> dict:
    """{name: (in_features, out_features)} of a block's seven linear layers."""
    q, kv, d, f = args.n_heads * args.head_dim, args.n_kv_heads * args.head_dim, args.dim, args.hidden_dim
    return {"wq": (d, q), "wk": (d, kv), "wv": (d, kv), "wo": (q, d), "w1": (d, f), "w2": (f, d), "w3": (d, f)}


def lora_parameter_count(args: ModelArgs, r: int, targets=("wq", "wv")) -> int:
    """Parameters of rank-``r`` adapters on ``targets`` in every block: r * (in + out) per layer.
    (Mistral 7B, r = 8 on wq and wv: 3,407,872, 0.047 % of the model.)"""
    shapes = linear_shapes(args)
    unknown = [t for t in targets if t not in shapes]
    if unknown:
        raise ValueError(f"lora_parameter_count: unknown target {unknown[0]!r}; the block's layers are {BLOCK_LINEARS}")
    return args.n_layers * sum(r * sum(shapes[t]) for t in targets)


def trainable_parameter_count(model: nn.Module) -> int:
    """Parameters of a built model that receive gradients (``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def adamw_state_bytes(n_params: int, bytes_per_value: int = 4) -> int:
    """Bytes of AdamW's two running moments (exp_avg, exp_avg_sq) for ``n_params`` parameters."""
    return 2 * n_params * bytes_per_value


def block_saved_bytes(args: ModelArgs, method: str = "lora", targets=("wq", "wv"), r: int = 8,
                      bytes_per_value: int = 2) -> dict:
    """Bytes per token that one block keeps for the backward pass, by what keeps them.

    Read off the operations, and equal to what autograd saves on a CPU in float32
    (tests/test_finetune_costs.py). RMSNorm keeps its float32 input and statistic; attention keeps
    q, k, v, its output (which is also wo's input) and one log-sum-exp per head; the SwiGLU keeps
    w1's, w3's and silu's outputs. A frozen linear layer needs nothing for its own backward; a
    trained one keeps its input. ``full``: every layer and norm is trained. ``lora``: each adapter
    keeps its float32 input and its rank-r middle; in half precision every adapter makes its own
    float32 copy of its input, in float32 the adapters of one input share it (and wo's is the
    attention output, already kept). The first block under LoRA keeps a little less (nothing
    upstream of its first adapter needs a gradient); it is counted like the others.
    """
    if method not in ("full", "lora"):
        raise ValueError(f"method must be 'full' or 'lora', got {method!r}")
    hd, H, K, d, f, b = args.head_dim, args.n_heads, args.n_kv_heads, args.dim, args.hidden_dim, bytes_per_value
    out = {"norms (float32 input and statistic)": 2 * (d + 1) * 4,
           "attention (q, k, v, output, log-sum-exp)": (2 * H + 2 * K) * hd * b + H * 4,
           "SwiGLU (w1, w3 and silu outputs)": 3 * f * b}
    if method == "full":
        out["norms (normalised output)"] = 2 * d * b
        out["inputs of wq wk wv, w1 w3, w2"] = (2 * d + f) * b
        return out
    width = {"wq": ("attn", d), "wk": ("attn", d), "wv": ("attn", d), "wo": ("wo", 0 if b == 4 else H * hd),
             "w1": ("ffn", d), "w3": ("ffn", d), "w2": ("w2", f)}
    inputs = list(set(width[t] for t in targets)) if b == 4 else [width[t] for t in targets]
    out["adapters (float32 inputs and rank-r middles)"] = (sum(w for _, w in inputs) + r * len(targets)) * 4
    return out


def int8_copy_bytes(args: ModelArgs, targets=("wq", "wv"), bytes_per_value: int = 2) -> int:
    """Bytes per block, whatever the number of tokens, that LoRA on int8 weights keeps besides:
    an int8 layer without an adapter multiplies by a float copy of its weight (``cast_matmul``),
    and autograd keeps that copy for the backward pass. (An adapter's base does not:
    ``lora.FrozenLinear`` rebuilds the weight in the backward.)"""
    return sum(i * o for t, (i, o) in linear_shapes(args).items() if t not in targets) * bytes_per_value


def head_saved_bytes(args: ModelArgs, method: str = "lora", bytes_per_value: int = 2) -> int:
    """Bytes per token kept outside the blocks: the final norm (and, full fine-tuning, its output,
    the head's input and the embedding's token ids) and the loss's float32 log-probabilities and
    int64 targets."""
    extra = 2 * args.dim * bytes_per_value + 8 if method == "full" else 0
    return (args.dim + 1) * 4 + extra + args.vocab_size * 4 + 8


def activation_bytes(args: ModelArgs, batch: int, seq_len: int, method: str = "lora", targets=("wq", "wv"),
                     r: int = 8, bytes_per_value: int = 2, checkpointing: bool = False,
                     quantize: Optional[str] = None) -> int:
    """Bytes of activations at the peak of a training step over ``batch`` x ``seq_len`` tokens.

    Without checkpointing every block's saved tensors live until the backward reaches it. With it,
    only each block's input is kept (dim values per token and layer) and one block's tensors are
    rebuilt at a time in the backward. Both add the head's, and the logits' float32 gradient, and,
    on int8 weights, the float copies of ``int8_copy_bytes`` (of every block, or of one).
    """
    block = sum(block_saved_bytes(args, method, targets, r, bytes_per_value).values())
    kept = args.n_layers * args.dim * bytes_per_value + block if checkpointing else args.n_layers * block
    copies = int8_copy_bytes(args, targets, bytes_per_value) if quantize == "int8" and method == "lora" else 0
    per_token = kept + head_saved_bytes(args, method, bytes_per_value) + args.vocab_size * 4
    return batch * seq_len * per_token + copies * (1 if checkpointing else args.n_layers)


def finetune_memory(args: ModelArgs, batch: int = 1, seq_len: int = 512, method: str = "lora", r: int = 8,
                    targets=("wq", "wv"), quantize: Optional[str] = None, checkpointing: bool = False,
                    bytes_per_value: int = 2) -> dict:
    """Bytes of one training step with AdamW, by component (what a GPU must hold at the peak).

    ``lora``: frozen weights in ``bytes_per_value`` (or int8, ``quantize='int8'``), float32 adapters,
    their gradients and two moments. ``full``: every parameter trained in float32 (weights,
    gradients, two moments: 16 bytes per parameter). Activations: ``activation_bytes``.
    """
    if method == "full":
        n = parameter_count(args)
        weights, trained = weights_nbytes(args, 4), n
    else:
        trained = lora_parameter_count(args, r, targets)
        weights = weights_nbytes(args, bytes_per_value, quantize) + trained * 4
    return {"weights": weights, "gradients": trained * 4, "AdamW moments": adamw_state_bytes(trained),
            "activations": activation_bytes(args, batch, seq_len, method, targets, r, bytes_per_value, checkpointing,
                                            quantize)}
