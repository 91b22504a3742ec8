"""The unigram and bigram models of ``evals.ngram`` as scorers of benchmark requests.

A benchmark number means little without the score of a model that cannot understand anything. The
n-gram baselines answer the same requests, tokenized the same way (``scoring.encode_pair``), with
p(token) (unigram: how frequent each choice's words are) or p(token | previous token) (bigram: do
the first words of a choice follow the context's last word, and each other, plausibly?). Where a
transformer's accuracy is no better than the bigram's, it has learned nothing the next-word
statistics did not already hold.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Optional, Sequence

import torch

from .ngram import BigramLM, UnigramLM
from .scoring import encode, encode_pair

__all__ = ["NgramScorer"]


class NgramScorer:
    """``loglikelihood`` and ``loglikelihood_rolling`` of a fitted ``UnigramLM`` or ``BigramLM``, with the
    same arguments and results as ``scoring.Scorer``'s (generation is not offered: a baseline here only
    scores the choices it is given)."""

    def __init__(self, lm, tokenizer):
        if not isinstance(lm, (UnigramLM, BigramLM)):
            raise TypeError(f"NgramScorer: lm must be a fitted UnigramLM or BigramLM, got {type(lm).__name__}")
        self.lm, self.tokenizer = lm, tokenizer

    def _distribution(self, prev: int) -> torch.Tensor:
        return self.lm.probs(prev) if isinstance(self.lm, BigramLM) else self.lm.probs()

    def _score(self, requests: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple[float, bool]]:
        """Each (context ids, continuation ids) -> (sum log p(token | previous token), all greedy)."""
        where = defaultdict(list)                        # previous id -> [(request, position, next id)]
        for r, (ctx, cont) in enumerate(requests):
            prevs = [ctx[-1]] + list(cont[:-1])
            for j, (a, b) in enumerate(zip(prevs, cont)):
                where[int(a) if isinstance(self.lm, BigramLM) else -1].append((r, j, int(b)))
        logp = [[0.0] * len(cont) for _, cont in requests]
        greedy = [[False] * len(cont) for _, cont in requests]
        for prev, uses in where.items():
            dist = self._distribution(prev)
            best = int(dist.argmax())
            for r, j, b in uses:
                logp[r][j], greedy[r][j] = float(torch.log(dist[b])), b == best
        return [(sum(lp), all(g)) for lp, g in zip(logp, greedy)]

    def loglikelihood(self, pairs, progress: Optional[bool] = None) -> list[tuple[float, bool]]:
        return self._score([encode_pair(self.tokenizer, c, x) for c, x in pairs])

    def loglikelihood_rolling(self, texts, progress: Optional[bool] = None) -> list[float]:
        """Every token of each text after the prefix ``<s>`` (an n-gram's context never needs windows)."""
        return [ll for ll, _ in self._score([([self.tokenizer.bos_id], encode(self.tokenizer, t)) for t in texts])]

    def generate_until(self, contexts, gen_kwargs=None, progress=None, seed=None):
        raise NotImplementedError("NgramScorer scores given continuations only; run generation tasks with a model")
