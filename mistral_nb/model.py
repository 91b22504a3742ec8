"""The Mistral transformer: embeddings, 32 pre-norm blocks (attention + SwiGLU), final norm, output head.

    h = embed(tokens)
    for each block:  h = h + attention(rms_norm(h));  h = h + feed_forward(rms_norm(h))
    logits = output(rms_norm(h))

Parameter names follow Mistral's consolidated checkpoints (``layers.0.attention.wq.weight``, ...),
so those load without renaming; ``checkpoint/names.py`` maps Hugging Face names onto them.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as checkpointed   # activation checkpointing

from .attention import Attention, additive_mask, use_banded
from .cache import RollingBufferCache
from .config import ModelArgs
from .masks import check_segments, chunk_mask, packed_mask, segment_positions, sliding_window_mask
from .norm import RMSNorm
from .rope import rope_angles


class FeedForward(nn.Module):
    """SwiGLU (Shazeer 2020): w2(silu(w1 x) * w3 x), no biases."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.w1 = nn.Linear(args.dim, args.hidden_dim, bias=False)   # gate
        self.w2 = nn.Linear(args.hidden_dim, args.dim, bias=False)   # down
        self.w3 = nn.Linear(args.dim, args.hidden_dim, bias=False)   # up

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, S, dim) -> (B, S, dim)
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: attention then feed-forward, each on an RMS-normalised input."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x, cos, sin, mask=None, cache=None):  # (B, S, dim) -> (B, S, dim)
        h = x + self.attention(self.attention_norm(x), cos, sin, mask, cache)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """Mistral 7B's architecture for any ``ModelArgs``.

    ``model(tokens)`` runs a whole sequence with sliding-window causal attention and no cache;
    ``model(tokens, cache=cache)`` runs a chunk that continues the sequences held in a
    ``RollingBufferCache``. Logits are returned in float32. ``model.checkpointing = True``: while
    training, each block's activations are recomputed in the backward pass instead of kept.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        args.validate()
        self.args = args
        # nn.Embedding's own init (normal_) costs seconds on the meta device the first time in a
        # process, for nothing; run it ourselves only on real memory (same values, same RNG order).
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim, _weight=torch.empty(args.vocab_size, args.dim))
        if not self.tok_embeddings.weight.is_meta:
            nn.init.normal_(self.tok_embeddings.weight)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.checkpointing = False

    def check_tokens(self, tokens: torch.Tensor) -> None:
        """Raise a clear error for a wrong shape, dtype or device, or ids outside [0, vocab_size)."""
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.long, torch.int32, torch.int64):
            raise TypeError(f"tokens must be an integer torch.Tensor of shape (B, S), got "
                            f"{type(tokens).__name__}{'' if not isinstance(tokens, torch.Tensor) else ' ' + str(tokens.dtype)}")
        if tokens.dim() != 2 or 0 in tokens.shape:
            raise ValueError(f"tokens must have shape (B, S) with B >= 1 and S >= 1, got {tuple(tokens.shape)}")
        if tokens.is_meta:
            raise ValueError("tokens are on the meta device, which holds no data: pass real token ids")
        weights = self.tok_embeddings.weight
        if weights.is_meta:
            raise ValueError("the model's weights are on the meta device (built empty, e.g. under torch.device('meta'), "
                             "and never loaded): load weights into it (load_model) or build it on a real device")
        if not weights.is_meta and tokens.device != weights.device:
            raise ValueError(f"tokens are on {tokens.device} but the model's weights are on {weights.device}: "
                             f"move them with tokens.to({str(weights.device)!r})")
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= self.args.vocab_size:
            bad = lo if lo < 0 else hi
            where = tuple(int(i) for i in (tokens == bad).nonzero()[0])
            raise ValueError(f"token id {bad} at (batch, position) {where} is outside [0, {self.args.vocab_size})")

    def forward(self, tokens: torch.Tensor, cache: Optional[RollingBufferCache] = None,
                positions: Optional[torch.Tensor] = None, last_only: bool = False,
                check: bool = True, segments: Optional[torch.Tensor] = None) -> torch.Tensor:
        """tokens (B, S) -> logits (B, S, vocab) float32 ((B, 1, vocab) with ``last_only``).

        positions: (B, S) absolute positions, only with a cache (default: continue each row);
        negative positions mark left padding, which is neither attended to nor cached.
        check: validate the ids (reads them back to the host: ``generate`` skips it for the tokens
        it sampled itself, which are in range by construction).
        segments: (B, S) ids of the sequences packed into each row (whole-sequence forward only):
        attention stays inside a segment and RoPE positions restart at each one.
        """
        if check:
            self.check_tokens(tokens)
            if segments is not None:
                check_segments(segments, tokens.shape)
        B, S = tokens.shape
        h = self.tok_embeddings(tokens)                                   # (B, S, dim)
        if cache is None:
            if positions is not None:
                raise ValueError("positions are only used with a cache; a whole-sequence forward starts at 0")
            pos = torch.arange(S, device=tokens.device) if segments is None else segment_positions(segments)
            cos, sin = rope_angles(pos, self.args.head_dim, self.args.rope_theta)   # (S, D/2); (B, S, D/2) packed
            mask = self.sequence_mask(S, h.dtype, tokens.device, segments)           # None: the banded path
            recompute = self.checkpointing and self.training and torch.is_grad_enabled()
            for layer in self.layers:     # with checkpointing, each block is run again in the backward pass
                h = checkpointed(layer, h, cos, sin, mask, use_reentrant=False) if recompute else layer(h, cos, sin, mask)
        else:
            if segments is not None:
                raise ValueError("segments are only used by a whole-sequence forward (no cache)")
            cache.check_chunk(self.args, tokens, positions, check_capacity=check)
            if positions is None:
                positions = cache.default_positions(S)
            cos, sin = rope_angles(positions, self.args.head_dim, self.args.rope_theta)  # (B, S, D/2)
            key_pos = cache.begin(positions)                              # (B, W + S); (B, W) if S = 1
            mask = additive_mask(chunk_mask(positions, key_pos, self.args.sliding_window,
                                            chunk_in_keys=not cache.writes_first), h.dtype)  # (B, 1, S, T)
            for i, layer in enumerate(self.layers):
                h = layer(h, cos, sin, mask, cache.layer(i))
            cache.commit()
        if last_only:
            h = h[:, -1:]
        return self.logits(h)

    def sequence_mask(self, S: int, dtype: torch.dtype, device, segments: Optional[torch.Tensor] = None):
        """Additive mask of a whole-sequence forward: None when the banded path pays, else (S, S);
        for packed rows, (B, 1, S, S), each segment attending only to itself."""
        if segments is not None:
            return additive_mask(packed_mask(segments, self.args.sliding_window), dtype)[:, None]
        if use_banded(S, self.args.sliding_window):
            return None
        return additive_mask(sliding_window_mask(S, self.args.sliding_window, device=device), dtype)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """The last hidden states (B, S, dim) -> logits (B, S, vocab) in float32: final norm, output head."""
        return self.output(self.norm(h)).float()

    def num_parameters(self) -> int:
        """Number of parameters (works on the meta device)."""
        return sum(p.numel() for p in self.parameters())
