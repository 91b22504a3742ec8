"""How many keys does "a window of W" give a query? The conventions in use for Mistral 7B.

Each function builds the (S, S) boolean mask of a whole sequence (row = query i, column = key j)
the way its source does, so that the keys per query and the reach after k layers can be read off
the masks themselves rather than from a formula:

* ``paper_text_mask``: the paper's "positions between i - W and i", read inclusively: i - W <= j <= i;
* ``reference_prefill_mask``: Mistral's ``one_file_ref.py`` as released (2023-09-27), which makes the
  causal mask banded with ``torch.triu(mask, diagonal=-sliding_window)``: also i - W <= j <= i;
* ``rolling_decode_mask``: the same file's decode step, which writes position i into slot i mod W of
  a W-slot cache and then attends to the slots: the last W positions, i - W < j <= i;
* the package's ``masks.sliding_window_mask``: i - W < j <= i, as Hugging Face transformers;
* ``llamacpp_mask``: what llama.cpp attends to when it runs Mistral v0.1 from GGUF (architecture
  ``llama``), measured rather than read off its source: ``dependence_mask`` perturbs one token at a
  time in a one-layer model exported to GGUF and records which positions' logits move.

A query that sees W + 1 keys reaches W positions back in one layer, and k x W after k layers; one
that sees W keys reaches W - 1, and k x (W - 1).
"""

from __future__ import annotations

import torch


def paper_text_mask(seq_len: int, window: int) -> torch.Tensor:
    """"Attends to all hidden states from the previous layer with positions between i - W and i",
    both ends included: (S, S) bool, W + 1 keys once i >= W."""
    i = torch.arange(seq_len)[:, None]
    j = torch.arange(seq_len)[None, :]
    return (i - window <= j) & (j <= i)


def reference_prefill_mask(seq_len: int, window: int) -> torch.Tensor:
    """The prefill mask of Mistral's released ``one_file_ref.py``: a lower triangle of ones (causal),
    then ``torch.triu(..., diagonal=-window)``, which keeps the diagonals j - i >= -W. (S, S) bool."""
    ones = torch.ones(seq_len, seq_len)
    return torch.triu(torch.tril(ones, diagonal=0), diagonal=-window) > 0


def rolling_decode_mask(seq_len: int, window: int) -> torch.Tensor:
    """Decode one token at a time through a cache of ``window`` slots, writing position p into slot
    p mod W *before* attending to the filled slots (as the reference's decode step does); row p holds
    the positions the slots contain at that moment. (S, S) bool."""
    slots = [-1] * window
    rows = torch.zeros(seq_len, seq_len, dtype=torch.bool)
    for p in range(seq_len):
        slots[p % window] = p
        rows[p, [s for s in slots if s >= 0]] = True
    return rows


def keys_per_query(mask: torch.Tensor) -> list[int]:
    """How many keys each query of an (S, S) mask may read."""
    return mask.sum(dim=-1).tolist()


def reach(mask: torch.Tensor, n_layers: int) -> int:
    """How far back the last position of an (S, S) mask can be influenced after ``n_layers`` layers:
    the boolean ``n_layers``-th power of the mask (each layer adds one hop; the residual stream lets
    a position keep its own value). S must be long enough for the reach not to hit position 0."""
    one = mask.to(torch.float32)
    power = torch.eye(mask.shape[0])
    for _ in range(n_layers):
        power = ((power @ one) > 0).to(torch.float32)
    first = int(power[-1].nonzero()[0])
    if first == 0:
        raise ValueError(f"the reach after {n_layers} layers hits position 0: use a longer mask than {mask.shape[0]}")
    return mask.shape[0] - 1 - first


def dependence_mask(logits_fn, tokens: torch.Tensor, vocab_size: int, tol: float = 1e-3) -> torch.Tensor:
    """Which keys each query of a one-layer model reads, found by experiment: (S, S) bool, True where
    changing token j changes the logits at position i by more than ``tol``. ``logits_fn``: (B, S) ids ->
    (B, S, vocab) logits; ``tokens``: (S,) ids. In one layer, position i depends on token j exactly when
    i attends to j (or j = i)."""
    seq_len = tokens.shape[0]
    changed = tokens.repeat(seq_len, 1)                                  # row j: token j replaced
    idx = torch.arange(seq_len)
    changed[idx, idx] = (tokens + 1 + vocab_size // 2) % vocab_size
    logits = logits_fn(torch.cat([tokens[None], changed]))
    return (logits[1:] - logits[:1]).abs().amax(dim=-1).T > tol         # [i, j]: query i, changed key j


def _llamacpp_mask_computed(seq_len: int, window: int, python=None) -> torch.Tensor:
    import tempfile
    from pathlib import Path

    from ..checkpoint.gguf import save_gguf
    from ..checkpoint.llamacpp import llamacpp_logits
    from ..config import ModelArgs
    from ..model import Transformer

    args = ModelArgs.tiny(n_layers=1, vocab_size=256, sliding_window=window)
    torch.manual_seed(0)
    model = Transformer(args).eval()
    tokens = torch.randint(3, args.vocab_size, (seq_len,), generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as tmp:
        path = save_gguf(model, Path(tmp) / "one_layer.gguf", quant="F32", tokenizer=None)
        return dependence_mask(lambda ids: llamacpp_logits(path, ids, python=python), tokens, args.vocab_size)


def llamacpp_mask(seq_len: int = 12, window: int = 3, python=None) -> tuple[torch.Tensor, str]:
    """(S, S) mask of the keys llama.cpp's Mistral v0.1 path attends to, for a model whose config says
    ``sliding_window=window``, and how it was obtained: measured now with llama.cpp ('computed', when
    llama-cpp-python is importable or ``python`` / $LLAMA_CPP_PYTHON names an interpreter that has it),
    else read from ``benchmarks/results/llamacpp_window.json`` ('recorded', measured the same way)."""
    from ..checkpoint.llamacpp import llamacpp_available

    if llamacpp_available(python):
        return _llamacpp_mask_computed(seq_len, window, python), "computed"
    from .results import load_recorded

    rec = load_recorded("benchmarks/results/llamacpp_window.json")["mask"]
    if (rec["seq_len"], rec["window"]) != (seq_len, window):
        raise ValueError(f"the recorded llama.cpp mask is for seq_len {rec['seq_len']}, window {rec['window']}; "
                         f"({seq_len}, {window}) needs llama-cpp-python (pip install llama-cpp-python)")
    return torch.tensor(rec["rows"], dtype=torch.bool), "recorded"
