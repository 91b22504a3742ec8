"""Serving memory: a paged KV cache (vLLM-style block tables) beside the rolling buffer.

A paged cache hands out fixed blocks of token slots from one pool shared by all sequences, so a
sequence holds only the blocks it has filled; with a sliding window, blocks the next token can no
longer see go back to the pool. The rolling buffer instead reserves W slots per sequence up front.
These functions count the slots; they do not store keys.
"""

from __future__ import annotations

from collections import deque
from typing import List, Optional


def paged_block_table(n_tokens: int, block_size: int = 16, window: Optional[int] = None) -> List[Optional[int]]:
    """The block table of one sequence after ``n_tokens`` tokens, paged-attention style.

    Physical blocks of ``block_size`` token slots come from a shared pool (here: ids 0, 1, 2, ... in
    order, freed ids reused first-in first-out). A new block is taken when the sequence's last one is
    full. With a sliding ``window``, once the next token can no longer see the first
    max(0, n - window + 1) tokens, every block holding only such tokens is returned to the pool and
    its entry becomes None (vLLM's sliding-window manager writes a shared "null block" there).
    Token p lives in slot p mod block_size of physical block ``table[p // block_size]``.
    """
    if block_size < 1 or n_tokens < 0:
        raise ValueError(f"need block_size >= 1 and n_tokens >= 0, got {block_size}, {n_tokens}")
    table: List[Optional[int]] = []
    free: deque = deque()
    next_id, first_live = 0, 0
    for p in range(n_tokens):
        if p // block_size >= len(table):                 # the last block is full: take one from the pool
            if free:
                table.append(free.popleft())
            else:
                table.append(next_id)
                next_id += 1
        if window is not None:                           # blocks the next token can no longer see
            skipped = max(0, (p + 1) - window + 1)
            while first_live < skipped // block_size:
                free.append(table[first_live])
                table[first_live] = None
                first_live += 1
    return table


def paged_kv_tokens(n_tokens: int, block_size: int = 16, window: Optional[int] = None) -> int:
    """Token slots a sequence holds in a paged cache after ``n_tokens`` tokens: the live entries of
    ``paged_block_table`` times the block size, in closed form — every block up to the last token,
    less the blocks entirely before the first position the next token sees."""
    blocks = -(-n_tokens // block_size)
    if window is not None:
        blocks -= max(0, n_tokens - window + 1) // block_size
    return block_size * blocks
