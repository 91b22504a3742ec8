"""Attention masks as small composable predicates over (query position, key position).

A mask predicate takes broadcastable integer tensors ``q`` (query positions) and ``k`` (key positions)
and returns a boolean tensor: True where the query may attend to the key. Predicates compose with
``and_masks``; ``mask_matrix`` turns one into a matrix you can test or plot.

Mistral's attention is ``causal & sliding_window(W)``: query i sees keys j with i - W < j <= i, so
the window W counts the query's own token.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

MaskFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def causal(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """A query sees itself and the past: k <= q."""
    return k <= q


def sliding_window(window: int) -> MaskFn:
    """A query sees the ``window`` most recent positions, itself included: q - k < window."""
    if window <= 0:
        raise ValueError(f"sliding window must be > 0, got {window}")

    def in_window(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return q - k < window

    in_window.__name__ = f"sliding_window_{window}"
    return in_window


def valid_key(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Negative key positions mark padding and empty cache slots: never attend to them."""
    return k >= 0


def and_masks(*fns: MaskFn) -> MaskFn:
    """A predicate true where every one of ``fns`` is true."""
    def both(q, k):
        out = fns[0](q, k)
        for fn in fns[1:]:
            out = out & fn(q, k)
        return out
    return both


def mistral_mask(window: Optional[int]) -> MaskFn:
    """Mistral's mask: causal, restricted to a sliding window of ``window`` keys (None = full causal)."""
    return causal if window is None else and_masks(causal, sliding_window(window))


def mask_matrix(fn: MaskFn, q_pos: torch.Tensor, k_pos: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Evaluate ``fn`` on every (query, key) pair.

    q_pos: (..., Sq) and k_pos: (..., Sk) integer positions (k_pos defaults to q_pos).
    Returns a bool tensor (..., Sq, Sk).
    """
    if k_pos is None:
        k_pos = q_pos
    return fn(q_pos[..., :, None], k_pos[..., None, :])


def same_segment(segments: torch.Tensor) -> MaskFn:
    """Packed rows: a query sees only the keys of its own segment (its own conversation).

    segments: (B, S) integer ids, one run per segment (non-decreasing along a row); the predicate
    takes index positions q, k (broadcastable, e.g. (S, 1) and (1, S)) and returns (B, ...) bool.
    """
    def in_segment(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return segments[..., q] == segments[..., k]

    return in_segment


def check_segments(segments, shape: tuple) -> None:
    """ValueError/TypeError unless ``segments`` is an integer tensor of ``shape`` (B, S) whose ids
    never decrease along a row (each segment one contiguous run)."""
    if not isinstance(segments, torch.Tensor) or segments.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"segments must be an integer torch.Tensor (B, S), got {type(segments).__name__}"
                        f"{' ' + str(segments.dtype) if isinstance(segments, torch.Tensor) else ''}")
    if tuple(segments.shape) != tuple(shape):
        raise ValueError(f"segments has shape {tuple(segments.shape)}, but the tokens have shape {tuple(shape)}")
    drops = (segments[:, 1:] < segments[:, :-1]).nonzero()
    if len(drops):
        b, i = (int(v) for v in drops[0])
        raise ValueError(f"segments must not decrease along a row (one contiguous run per segment): row {b} "
                         f"goes from {int(segments[b, i])} to {int(segments[b, i + 1])} at position {i + 1}")


def segment_positions(segments: torch.Tensor) -> torch.Tensor:
    """(B, S) segment ids -> (B, S) position of each token inside its segment (0 at every segment's start),
    the RoPE positions of packed rows."""
    idx = torch.arange(segments.shape[-1], device=segments.device)
    starts = torch.ones_like(segments, dtype=torch.bool)
    starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
    return idx - torch.where(starts, idx, 0).cummax(dim=-1).values


def packed_mask(segments: torch.Tensor, window: Optional[int]) -> torch.Tensor:
    """(B, S, S) mask of packed rows: Mistral's mask inside each segment, nothing across segments.
    Inside a segment, index distances are position distances, so causal & window apply to indices."""
    idx = torch.arange(segments.shape[-1], device=segments.device)
    return mask_matrix(and_masks(mistral_mask(window), same_segment(segments)), idx)


def sliding_window_mask(seq_len: int, window: Optional[int], device=None) -> torch.Tensor:
    """The (seq_len, seq_len) boolean mask of a whole-sequence forward (positions 0 .. seq_len-1)."""
    pos = torch.arange(seq_len, device=device)
    return mask_matrix(mistral_mask(window), pos)


def chunk_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: Optional[int],
               chunk_in_keys: bool = True) -> torch.Tensor:
    """Mask of a chunk attending to the rolling cache (plus itself).

    q_pos: (B, C) absolute positions of the chunk's tokens (negative = left padding).
    k_pos: (B, T) positions of the keys: the cache slots (negative = empty) followed by the chunk, or
    — ``chunk_in_keys=False``, a decode step that wrote itself into the cache first — the slots alone.
    Returns (B, 1, C, T) bool. A padding query has no valid key; so that softmax stays finite it may
    attend to its own key (the last C keys are the chunk itself) or, without the chunk among the
    keys, to every slot. Its output is unused.
    """
    fn = and_masks(valid_key, mistral_mask(window))
    allowed = mask_matrix(fn, q_pos, k_pos)                                    # (B, C, T)
    pad_query = (q_pos < 0)[..., :, None]                                      # (B, C, 1)
    if chunk_in_keys:
        C, T = q_pos.shape[-1], k_pos.shape[-1]
        is_self = torch.zeros(C, T, dtype=torch.bool, device=q_pos.device)
        is_self[:, T - C:] = torch.eye(C, dtype=torch.bool, device=q_pos.device)
        allowed = allowed | (pad_query & is_self)
    else:
        allowed = allowed | pad_query
    return allowed[:, None]                                                    # (B, 1, C, T)


def attended_pairs(seq_len: int, window: Optional[int] = None) -> int:
    """Number of (query, key) pairs a whole-sequence forward attends to: the True entries of
    ``sliding_window_mask(seq_len, window)``, in closed form.

    The first min(S, W) queries see 1, 2, ... keys; every later query sees exactly W.
    """
    n = seq_len if window is None else min(seq_len, window)
    return n * (n + 1) // 2 + (seq_len - n) * (window or 0)


def receptive_field(n_layers: int, window: int) -> int:
    """How far back (in tokens) information can flow after ``n_layers`` sliding-window layers.

    One layer moves information at most W - 1 positions (the window includes the token itself),
    so k layers reach k * (W - 1) tokens back. (The paper counts W + 1 keys per query, i - W .. i,
    and so k * W: see ``mistral_nb.book.conventions``.)
    """
    return n_layers * (window - 1)


def reachability(seq_len: int, window: int, n_layers: int) -> torch.Tensor:
    """Which positions can influence which after ``n_layers`` layers: (seq_len, seq_len) bool.

    It is the boolean ``n_layers``-th power of the one-layer mask (paths through the residual
    stream and the attention at every layer).
    """
    one = sliding_window_mask(seq_len, window).to(torch.float32)
    reach = torch.eye(seq_len)
    for _ in range(n_layers):
        reach = ((reach @ one) > 0).to(torch.float32)
    return reach.bool()
