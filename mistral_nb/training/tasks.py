"""Synthetic tasks for tiny trained models, and the probes that look inside them.

``KeyRecall`` tests how far back a sliding-window model can fetch information. A sequence is
random *noise* tokens with one *key* token planted at position p; later positions must name the key
(the target is the key itself): every later position in the dense variant, only a final query mark
in the ``query=True`` variant. Noise and keys come from disjoint parts of the vocabulary, and the
noise is independent of the key, so nothing but the key token itself tells which key it was.

With a window W, one layer moves information at most W - 1 positions (``masks.receptive_field``), so
after L layers position i depends only on tokens i - L(W-1) .. i: beyond d = L(W - 1) the key is
out of reach and no weights can beat chance (1 / n_keys). Within reach the model can succeed only
by *relaying*: in layer 1 the tokens just after the key copy it, in layer 2 tokens further on copy it
from those, and so on, window by window.

Probes (used by chapter 11): ``accuracy_by_distance`` and ``key_influence_by_distance`` (how much each
layer's residual stream changes when the key is swapped, as a function of the distance from the
key); the attention maps and the strongest-link path through them are in ``evals.heads``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch

from ..model import Transformer
from .checks import as_count
from .loop import IGNORE

__all__ = ["KeyRecall", "RecallBatch", "distances", "accuracy_by_distance", "key_influence_by_distance"]


class RecallBatch(NamedTuple):
    tokens: torch.Tensor    # (B, S) token ids
    targets: torch.Tensor   # (B, S) the key id at positions after the key, IGNORE elsewhere
    key_pos: torch.Tensor   # (B,) position of the key


@dataclass(frozen=True)
class KeyRecall:
    """Recall a key planted d tokens back.

    Vocabulary: ids 0 .. n_noise-1 are noise, ids n_noise .. n_noise+n_keys-1 are keys, and the last
    id (``query_id``) is a query mark.

    Two ways to ask (``query``):

    * ``query=False`` (dense): the key is planted at a position drawn uniformly from
      0 .. max_key_pos and *every* later position is asked for it, so one sequence asks every
      distance d = 1 .. ``max_distance`` at once;
    * ``query=True``: only the last position is asked; it holds the query mark, and the key is
      planted at a position drawn uniformly from 0 .. seq_len - 2 (distance 1 .. seq_len - 1).
      The tokens in between are never scored, so nothing asks them to carry the key along: the
      model has to discover relaying from the query's loss alone.
    """

    n_keys: int = 16
    n_noise: int = 16
    seq_len: int = 40
    max_key_pos: int = 8
    query: bool = False

    def __post_init__(self):
        for name in ("n_keys", "n_noise", "seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"KeyRecall.{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"KeyRecall.{name} must be >= 1, got {value}")
        if not isinstance(self.query, bool):
            raise TypeError(f"KeyRecall.query must be True or False, got {self.query!r}")
        if isinstance(self.max_key_pos, bool) or not isinstance(self.max_key_pos, int):
            raise TypeError(f"KeyRecall.max_key_pos must be an int, got {self.max_key_pos!r}")
        if self.seq_len < 2:
            raise ValueError(f"KeyRecall.seq_len must be >= 2, got {self.seq_len}")
        if not 0 <= self.max_key_pos <= self.seq_len - 2:
            raise ValueError(f"KeyRecall.max_key_pos must be in [0, seq_len - 2 = {self.seq_len - 2}], "
                             f"got {self.max_key_pos}")

    @property
    def vocab_size(self) -> int:
        return self.n_noise + self.n_keys + 1

    @property
    def query_id(self) -> int:
        return self.n_noise + self.n_keys

    @property
    def chance(self) -> float:
        """Accuracy of a guess among the keys."""
        return 1.0 / self.n_keys

    @property
    def max_distance(self) -> int:
        """Largest distance asked (in dense mode: asked in every sequence)."""
        return self.seq_len - 1 if self.query else self.seq_len - 1 - self.max_key_pos

    def out_of_reach_fraction(self, reach: Optional[int]) -> float:
        """Expected fraction of asked positions whose key lies more than ``reach`` tokens back
        (``reach=None``: full attention, 0)."""
        if reach is None:
            return 0.0
        reach = as_count("KeyRecall.out_of_reach_fraction", "reach", reach, 0)
        if self.query:
            return max(0, self.seq_len - 1 - reach) / (self.seq_len - 1)
        asked = beyond = 0
        for p in range(self.max_key_pos + 1):       # key positions are equally likely
            n = self.seq_len - 1 - p                # distances 1 .. n are asked
            asked += n
            beyond += max(0, n - reach)
        return beyond / asked

    def loss_floor(self, reach: Optional[int]) -> float:
        """Lowest expected loss (nats) of a model that reaches ``reach`` tokens back: perfect within
        reach, a uniform guess among the keys (ln n_keys) beyond it."""
        return self.out_of_reach_fraction(reach) * math.log(self.n_keys)

    def sample(self, batch_size: int, generator: Optional[torch.Generator] = None,
               key_pos: Optional[torch.Tensor] = None) -> RecallBatch:
        """A batch of sequences drawn with ``generator`` (same generator state -> same batch).

        key_pos: (B,) positions to plant the keys at, instead of drawing them.
        """
        B, S = self._check_sample(batch_size, key_pos), self.seq_len
        tokens = torch.randint(0, self.n_noise, (B, S), generator=generator)
        if key_pos is None:
            high = S - 2 if self.query else self.max_key_pos
            key_pos = torch.randint(0, high + 1, (B,), generator=generator)
        keys = self.n_noise + torch.randint(0, self.n_keys, (B,), generator=generator)
        tokens[torch.arange(B), key_pos] = keys
        if self.query:
            tokens[:, -1] = self.query_id
            asked = torch.zeros(B, S, dtype=torch.bool)
            asked[:, -1] = True
        else:
            asked = torch.arange(S)[None, :] > key_pos[:, None]                  # (B, S)
        targets = torch.where(asked, keys[:, None].expand(B, S), torch.full((B, S), IGNORE))
        return RecallBatch(tokens, targets, key_pos)

    def _check_sample(self, batch_size, key_pos) -> int:
        B, high = as_count("KeyRecall.sample", "batch_size", batch_size), self.seq_len - 2    # a key before a later position
        if key_pos is not None and (not isinstance(key_pos, torch.Tensor) or key_pos.shape != (B,)
                                    or key_pos.dtype.is_floating_point or not bool(((key_pos >= 0) & (key_pos <= high)).all())):
            raise ValueError(f"KeyRecall.sample: key_pos must be a ({B},) integer tensor of positions in [0, {high}], "
                             f"got {key_pos!r}")
        return B

    def batches(self, batch_size: int):
        """A batch function for ``training.loop.train``: generator -> (tokens, targets)."""
        as_count("KeyRecall.batches", "batch_size", batch_size)

        def batch(generator: torch.Generator):
            b = self.sample(batch_size, generator)
            return b.tokens, b.targets
        return batch

    def labels(self, tokens) -> list[str]:
        """Axis labels of one sequence: keys as 'K5', noise as 'n3', the query mark as '?'."""
        def name(t):
            return "?" if t == self.query_id else f"K{t - self.n_noise}" if t >= self.n_noise else f"n{t}"
        return [name(int(t)) for t in tokens]


def distances(key_pos: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(B,) key positions -> (B, S) distance i - p of every position from its key (negative before it)."""
    return torch.arange(seq_len)[None, :] - key_pos[:, None]


@torch.no_grad()
def accuracy_by_distance(model: Transformer, task: KeyRecall, n_sequences: int = 1024, seed: int = 1234,
                         batch_size: int = 256) -> dict:
    """Fraction of asked positions whose predicted key (argmax over the key ids) is right, per distance.

    Returns ``{"distance": [1 .. task.max_distance], "accuracy": [...], "count": [...]}``; every
    distance is asked ``n_sequences`` times. Dense task: ``n_sequences`` sequences, each asking every
    distance once. Query task: ``n_sequences`` sequences per distance, the key planted d tokens
    before the query mark.
    """
    n_sequences = as_count("accuracy_by_distance", "n_sequences", n_sequences)
    batch_size = as_count("accuracy_by_distance", "batch_size", batch_size)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    D, S = task.max_distance, task.seq_len
    correct = torch.zeros(D + 1, dtype=torch.long)
    count = torch.zeros(D + 1, dtype=torch.long)
    keys = slice(task.n_noise, task.n_noise + task.n_keys)
    if task.query:   # every distance equally often: key at S - 1 - d
        plan = (S - 1 - torch.arange(1, D + 1)).repeat_interleave(n_sequences)
    else:
        plan = torch.full((n_sequences,), -1)
    for start in range(0, len(plan), batch_size):
        chunk = plan[start:start + batch_size]
        b = task.sample(len(chunk), gen, key_pos=chunk if task.query else None)
        pred = model(b.tokens)[..., keys].argmax(-1) + task.n_noise              # (B, S)
        d = distances(b.key_pos, S)
        scored = (b.targets != IGNORE) & (d >= 1) & (d <= D)
        correct += torch.bincount(d[scored], weights=(pred == b.targets)[scored].double(), minlength=D + 1).long()
        count += torch.bincount(d[scored], minlength=D + 1)
    acc = correct[1:].double() / count[1:].clamp(min=1)
    return {"distance": list(range(1, D + 1)), "accuracy": [round(float(a), 4) for a in acc],
            "count": [int(c) for c in count[1:]]}


@torch.no_grad()
def key_influence_by_distance(model: Transformer, task: KeyRecall, n_sequences: int = 256,
                              seed: int = 99) -> torch.Tensor:
    """How much each layer's residual stream changes when the planted key is swapped for another.

    For every sequence the key is replaced by a different key; the relative change
    ||h - h'|| / ||h|| of the residual stream after the embeddings (row 0) and after each block
    (rows 1 .. L) is averaged per distance d = 0 .. task.max_distance from the key.
    Returns (L + 1, max_distance + 1). Row l is exactly zero beyond l (W - 1): the receptive field.
    """
    n_sequences = as_count("key_influence_by_distance", "n_sequences", n_sequences)
    if task.n_keys < 2:
        raise ValueError("key_influence_by_distance: swapping the key for another needs a task with n_keys >= 2")
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    b = task.sample(n_sequences, gen)
    shift = torch.randint(1, task.n_keys, (n_sequences,), generator=gen)
    other = b.tokens.clone()
    rows = torch.arange(n_sequences)
    other[rows, b.key_pos] = task.n_noise + (b.tokens[rows, b.key_pos] - task.n_noise + shift) % task.n_keys

    def stream(tokens):
        out: list = []
        hooks = [model.tok_embeddings.register_forward_hook(lambda m, i, o: out.append(o))]
        hooks += [layer.register_forward_hook(lambda m, i, o: out.append(o)) for layer in model.layers]
        try:
            model(tokens)
        finally:
            for h in hooks:
                h.remove()
        return torch.stack(out)                                                  # (L+1, B, S, dim)

    h, h2 = stream(b.tokens), stream(other)
    change = (h - h2).norm(dim=-1) / h.norm(dim=-1)                              # (L+1, B, S)
    D = task.max_distance
    d = distances(b.key_pos, task.seq_len)                                       # (B, S)
    result = torch.zeros(len(h), D + 1)
    for dist in range(D + 1):
        result[:, dist] = change[:, d == dist].mean(dim=1)
    return result
