"""The rolling-buffer KV cache: W slots per layer, whatever the sequence length.

With a sliding window W, a query never looks further back than W - 1 tokens, so the cache only has
to keep the keys and values of the last W positions. The token at absolute position p lives in slot
p mod W; writing position p overwrites position p - W, which no later query can see any more.
Keys are stored *after* RoPE (rotated with their absolute positions), so they never need re-rotating.

Each slot also remembers which absolute position it holds (-1 for an empty slot); masks are built
from those positions, so the slot order inside the buffer never matters.
"""

from __future__ import annotations

from typing import Optional

import torch

from .config import ModelArgs


def _check_sizes(**sizes) -> None:
    """ValueError naming the first size that is not an int > 0."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"cache {name} must be an int > 0, got {value!r}")


class RollingBufferCache:
    """Keys and values of the last ``window`` positions, for every layer and batch row.

    Buffers: ``k``, ``v`` of shape (n_layers, B, W, K, D); ``slot_pos`` (B, W) absolute position held
    by each slot (-1 = empty); ``next_pos`` (B,) the position the next token of each row will get.
    """

    def __init__(self, n_layers: int, batch_size: int, window: int, n_kv_heads: int, head_dim: int,
                 device=None, dtype: torch.dtype = torch.float32):
        _check_sizes(n_layers=n_layers, batch_size=batch_size, window=window, n_kv_heads=n_kv_heads, head_dim=head_dim)
        self.window = window
        shape = (n_layers, batch_size, window, n_kv_heads, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.slot_pos = torch.full((batch_size, window), -1, dtype=torch.long, device=device)
        self.next_pos = torch.zeros(batch_size, dtype=torch.long, device=device)
        self._pending: Optional[torch.Tensor] = None   # positions of the chunk being processed
        self._slot_pos_next: Optional[torch.Tensor] = None   # slot_pos once that chunk is written

    @classmethod
    def for_model(cls, model, batch_size: int, window: Optional[int] = None) -> "RollingBufferCache":
        """A cache shaped for ``model``; ``window`` defaults to the model's sliding window.

        A model without a sliding window needs ``window`` = the longest sequence you will run.
        """
        args: ModelArgs = model.args
        window = args.sliding_window if window is None else window
        if window is None:
            raise ValueError("model has no sliding_window: pass window= (max sequence length) to the cache")
        p = next(model.parameters())
        dtype = p.dtype if p.dtype.is_floating_point else torch.float32
        return cls(args.n_layers, batch_size, window, args.n_kv_heads, args.head_dim, device=p.device, dtype=dtype)

    @property
    def batch_size(self) -> int:
        return self.slot_pos.shape[0]

    def nbytes(self) -> int:
        """Bytes held by the key and value buffers."""
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    def default_positions(self, chunk_len: int) -> torch.Tensor:
        """Positions for a chunk that continues every row: next_pos[:, None] + arange(C). (B, C)."""
        return self.next_pos[:, None] + torch.arange(chunk_len, device=self.next_pos.device)

    def check_chunk(self, args: ModelArgs, tokens: torch.Tensor, positions: Optional[torch.Tensor] = None,
                    check_capacity: bool = True) -> None:
        """Raise ValueError / TypeError if a chunk of ``tokens`` (B, C) at ``positions`` (B, C) or None
        cannot run against this cache for a model with ``args``: another batch size, layer count, head
        shape or device, positions that are not integers of the tokens' shape — and, with
        ``check_capacity`` (reads the positions back to the host), a cache smaller than the model's
        window asked to hold positions beyond its size, which would overwrite keys still in view."""
        B = tokens.shape[0]
        if B != self.batch_size:
            raise ValueError(f"the cache was built for batch size {self.batch_size}, but the tokens have "
                             f"batch size {B}: build one with RollingBufferCache.for_model(model, {B})")
        built, needed = tuple(self.k.shape[i] for i in (0, 3, 4)), (args.n_layers, args.n_kv_heads, args.head_dim)
        if built != needed:
            raise ValueError(f"the cache was built for (n_layers, n_kv_heads, head_dim) = {built}, but the "
                             f"model has {needed}: build it with RollingBufferCache.for_model(model, ...)")
        if self.k.device != tokens.device:
            raise ValueError(f"the cache is on {self.k.device} but the tokens are on {tokens.device}")
        if positions is None:
            if not check_capacity:
                return                      # the default positions continue each row: nothing else to check
            positions = self.default_positions(tokens.shape[1])
        elif not isinstance(positions, torch.Tensor) or positions.dtype not in (torch.long, torch.int32):
            got = str(positions.dtype) if isinstance(positions, torch.Tensor) else type(positions).__name__
            raise TypeError(f"positions must be an integer (torch.long) tensor of absolute positions, got {got}")
        if positions.shape != tokens.shape:
            raise ValueError(f"positions {tuple(positions.shape)} must match tokens {tuple(tokens.shape)}")
        if positions.device != tokens.device:
            raise ValueError(f"positions are on {positions.device} but the tokens are on {tokens.device}")
        window = args.sliding_window
        if check_capacity and (window is None or self.window < window) and int(positions.max()) >= self.window:
            raise ValueError(f"position {int(positions.max())} does not fit a cache of {self.window} slots for a "
                             f"model whose window is {window or 'unbounded'}: it would overwrite keys that are "
                             "still in view. Build the cache with window >= the model's sliding window (or, "
                             "without one, >= the sequence length)")

    def grow(self, window: int) -> None:
        """Enlarge the buffers to ``window`` slots, keeping every cached position (re-slotted at
        p mod window). For a model without a sliding window, whose cache must hold the whole sequence:
        ``generate`` grows it as the sequence grows instead of reserving the longest one up front."""
        _check_sizes(window=window)
        if window < self.window:
            raise ValueError(f"grow: {window} slots is fewer than the {self.window} the cache has")
        if self._pending is not None:
            raise RuntimeError("grow() in the middle of a chunk (between begin and commit)")
        L, B, _, K, D = self.k.shape
        k = self.k.new_zeros((L, B, window, K, D))
        v = self.v.new_zeros((L, B, window, K, D))
        slot_pos = torch.full((B, window), -1, dtype=torch.long, device=self.slot_pos.device)
        for b in range(B):
            held = (self.slot_pos[b] >= 0).nonzero().flatten()              # slots holding a position
            pos = self.slot_pos[b, held]
            k[:, b, pos % window], v[:, b, pos % window] = self.k[:, b, held], self.v[:, b, held]
            slot_pos[b, pos % window] = pos
        self.k, self.v, self.slot_pos, self.window = k, v, slot_pos, window

    # ---- one forward pass over a chunk: begin -> (each layer: extend) -> commit
    def begin(self, positions: torch.Tensor) -> torch.Tensor:
        """Start a chunk at ``positions`` (B, C); returns the positions of the keys it attends to.

        A chunk of C > 1 tokens attends to the W cached slots followed by itself: (B, W + C).
        A single token (a decode step) is written into its slot first and attends to the W slots
        alone: (B, W). The slot it overwrites held position p - W, which its window
        (p - W < j <= p) excludes anyway — so nothing it needs is lost, no copy of the cache is
        made, and every decode step has the same shapes.
        """
        B, C = positions.shape
        if B != self.batch_size:
            raise ValueError(f"chunk has batch {B} but the cache was built for batch {self.batch_size}")
        if C > self.window:
            raise ValueError(f"chunk of {C} tokens is longer than the cache window {self.window}: "
                             "prefill in chunks of at most W tokens")
        self._pending = positions
        slots = positions % self.window
        written = torch.where(positions >= 0, positions, self.slot_pos.gather(1, slots))   # padding: keep old
        self._slot_pos_next = self.slot_pos.scatter(1, slots, written)         # (B, W) once the chunk is written
        if self.writes_first:
            return self._slot_pos_next                                          # (B, W)
        return torch.cat([self.slot_pos, positions], dim=1)                     # (B, W + C)

    @property
    def writes_first(self) -> bool:
        """True while a single-token chunk is in flight: it is written before attention reads the slots."""
        return self._pending is not None and self._pending.shape[1] == 1

    def layer(self, index: int) -> "LayerCache":
        return LayerCache(self, index)

    def commit(self) -> None:
        """Record the chunk's positions in the slots it was written to (in place: the buffers keep
        their addresses, as a CUDA graph of the decode step needs)."""
        pos = self._pending
        assert pos is not None, "commit() without begin()"
        self.slot_pos.copy_(self._slot_pos_next)
        self.next_pos.copy_(torch.maximum(self.next_pos, pos.max(dim=1).values + 1))
        self._pending = self._slot_pos_next = None

    def _write(self, index: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Write a chunk's k, v (B, C, K, D) into slots pos mod W of layer ``index`` (padding skipped)."""
        pos = self._pending
        slots = (pos % self.window)[:, :, None, None].expand_as(k)            # (B, C, K, D)
        keep = (pos >= 0)[:, :, None, None]
        for buf, new in ((self.k[index], k), (self.v[index], v)):
            old = buf.gather(1, slots)
            buf.scatter_(1, slots, torch.where(keep, new.to(buf.dtype), old))


class LayerCache:
    """One layer's view of a RollingBufferCache, handed to ``Attention.forward``."""

    def __init__(self, cache: RollingBufferCache, index: int):
        self.cache, self.index = cache, index

    def extend(self, k: torch.Tensor, v: torch.Tensor):
        """Write the chunk's k, v (B, C, K, D) into the cache and return the keys/values it attends to:
        the cached W slots then the chunk, (B, W + C, K, D) — or, for a single token, which is
        written first, the W slots themselves, (B, W, K, D), without a copy."""
        c = self.cache
        if c.writes_first:
            c._write(self.index, k, v)
            return c.k[self.index], c.v[self.index]
        k_all = torch.cat([c.k[self.index], k.to(c.k.dtype)], dim=1)
        v_all = torch.cat([c.v[self.index], v.to(c.v.dtype)], dim=1)
        c._write(self.index, k, v)
        return k_all, v_all
