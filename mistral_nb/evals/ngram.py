"""Count-based baselines for a language model: uniform, unigram and bigram, in nats per token.

They answer "how good is that loss?": a model that has learned nothing scores the uniform ln V; one
that knows only how frequent each token is scores the unigram's loss; one that also knows which
token tends to follow which scores the bigram's. A transformer earns its keep by beating the bigram.

* ``UnigramLM``: add-one (Laplace) smoothing, p(b) = (c(b) + 1) / (N + V).
* ``BigramLM``: interpolated Kneser-Ney with one absolute discount D (Kneser & Ney 1995; Chen &
  Goodman 1998): p(b | a) = max(c(a b) - D, 0) / c(a) + D n(a .) / c(a) * p_cont(b), where n(a .)
  is the number of different tokens seen after a, and the continuation probability p_cont(b) is
  the share of different left neighbours b has (itself interpolated with the uniform, so unseen
  tokens keep some probability). Every distribution sums to one (tested).

Both are fitted on a 1-D tensor of ids (a ``TokenStream``) and scored on another; target ids in
``ignore_ids`` (``<s>``, which only follows a document's end) are neither counted nor scored.
"""

from __future__ import annotations

import math

import torch

from ..training.checks import as_count, as_real, check_id_tensor, check_ignore_ids

__all__ = ["uniform_loss", "UnigramLM", "BigramLM"]


def uniform_loss(vocab_size: int) -> float:
    """Cross-entropy of the uniform guess: ln V nats (10.37 for Mistral's 32,000 ids)."""
    return math.log(as_count("uniform_loss", "vocab_size", vocab_size))


def _pairs(where: str, ids: torch.Tensor, vocab_size: int, ignore_ids: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(previous id, target id) of every scored target ids[1:]; the ids must lie in [0, vocab_size)
    (one beyond it would be counted as another id, or fall off the tables)."""
    ids = check_id_tensor(where, "ids", ids, vocab_size, dims=(1,), min_len=2)
    prev, nxt = ids[:-1].long(), ids[1:].long()
    keep = torch.ones_like(nxt, dtype=torch.bool)
    for i in ignore_ids:
        keep &= nxt != i
    if not bool(keep.any()):
        raise ValueError(f"{where}: every target of ids is one of ignore_ids {ignore_ids}: no target is left")
    return prev[keep], nxt[keep]


class UnigramLM:
    """p(b) = (c(b) + 1) / (N + V) over the scored targets of the training ids."""

    def __init__(self, vocab_size: int, ignore_ids: tuple = ()):
        self.vocab_size = as_count("UnigramLM", "vocab_size", vocab_size)
        self.ignore_ids = check_ignore_ids("UnigramLM", ignore_ids)
        self.counts = torch.zeros(self.vocab_size, dtype=torch.float64)

    def fit(self, ids: torch.Tensor) -> "UnigramLM":
        _, nxt = _pairs("UnigramLM.fit", ids, self.vocab_size, self.ignore_ids)
        self.counts = torch.bincount(nxt, minlength=self.vocab_size).double()
        return self

    def probs(self) -> torch.Tensor:
        """(V,) float64."""
        return (self.counts + 1) / (self.counts.sum() + self.vocab_size)

    def loss(self, ids: torch.Tensor) -> float:
        """Mean -ln p(target) over the scored targets ids[1:]."""
        _, nxt = _pairs("UnigramLM.loss", ids, self.vocab_size, self.ignore_ids)
        return float(-self.probs().log()[nxt].mean())


class BigramLM:
    """Interpolated Kneser-Ney bigram model (see the module docstring)."""

    def __init__(self, vocab_size: int, discount: float = 0.75, ignore_ids: tuple = ()):
        self.vocab_size = as_count("BigramLM", "vocab_size", vocab_size)
        self.discount = as_real("BigramLM", "discount", discount, "a number in (0, 1)", lambda d: 0 < d < 1)
        self.ignore_ids = check_ignore_ids("BigramLM", ignore_ids)
        self.keys = None

    def fit(self, ids: torch.Tensor) -> "BigramLM":
        V = self.vocab_size
        prev, nxt = _pairs("BigramLM.fit", ids, V, self.ignore_ids)
        keys, counts = torch.unique(prev * V + nxt, return_counts=True)           # sorted pair keys
        self.keys, self.pair_counts = keys, counts.double()
        a, b = keys // V, keys % V
        self.context_counts = torch.bincount(a, weights=self.pair_counts, minlength=V)   # c(a)
        self.followers = torch.bincount(a, minlength=V).double()                  # n(a .)
        left = torch.bincount(b, minlength=V).double()                            # n(. b)
        total, D = left.sum(), self.discount
        seen = (left > 0).sum()
        self.p_cont = (left - D).clamp(min=0) / total + D * seen / total / V      # (V,)
        return self

    def _p(self, where: str, prev: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        if self.keys is None:
            raise ValueError(f"{where}: the model has not been fitted yet: call fit(ids) first")
        V, D = self.vocab_size, self.discount
        key = prev * V + nxt
        idx = torch.searchsorted(self.keys, key).clamp(max=len(self.keys) - 1)
        c_ab = torch.where(self.keys[idx] == key, self.pair_counts[idx], torch.zeros((), dtype=torch.float64))
        c_a, n_a = self.context_counts[prev], self.followers[prev]
        has = c_a > 0
        safe = torch.where(has, c_a, torch.ones_like(c_a))
        p = (c_ab - D).clamp(min=0) / safe + D * n_a / safe * self.p_cont[nxt]
        return torch.where(has, p, self.p_cont[nxt])

    def probs(self, prev: int) -> torch.Tensor:
        """(V,) float64: p(. | prev)."""
        prev = as_count("BigramLM.probs", "prev", prev, 0, self.vocab_size - 1)
        nxt = torch.arange(self.vocab_size)
        return self._p("BigramLM.probs", torch.full_like(nxt, prev), nxt)

    def loss(self, ids: torch.Tensor) -> float:
        """Mean -ln p(ids[t] | ids[t-1]) over the scored targets."""
        prev, nxt = _pairs("BigramLM.loss", ids, self.vocab_size, self.ignore_ids)
        return float(-self._p("BigramLM.loss", prev, nxt).log().mean())
