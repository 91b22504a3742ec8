"""The numbers of a benchmark table, defined as lm-evaluation-harness defines them.

* **acc** (multiple choice): the item is right when the choice with the highest summed
  log-probability is the gold one. **acc_norm**: the same after dividing each choice's
  log-probability by its length in *characters* (lm-eval's ``len(choice)``; ``acc_bytes`` would use
  UTF-8 bytes), so that long choices are not punished for having more tokens to pay for.
* **standard error** of a mean of per-item scores: the sample standard deviation over sqrt(n)
  (lm-eval's ``mean_stderr``); the 95 % interval here is the mean +- 1.96 standard errors.
* **perplexity** of loglikelihood items: exp(-mean log-likelihood) (per item, not per token: LAMBADA's
  ``perplexity`` is of the target word). For rolling log-likelihood of whole documents:
  **word_perplexity** = exp(-sum ll / sum words), **byte_perplexity** = exp(-sum ll / sum bytes),
  **bits_per_byte** = -sum ll / sum bytes / ln 2, with words counted as ``re.split(r"\\s+", text)``
  pieces and bytes as UTF-8 bytes.
* **exact_match**: the generated string equals the reference (optionally ignoring case,
  punctuation, digits, or regexes), as lm-eval's ``exact_match`` (from Hugging Face ``evaluate``).
* **maj@k**: sample k answers per item, keep the most frequent (ties: the first seen, as lm-eval's
  ``majority_vote`` filter with ``Counter.most_common``), and score that one.
* **pass@k** (Chen et al. 2021): with n samples of which c pass, the unbiased estimate of "at least
  one of k samples passes" is 1 - C(n-c, k) / C(n, k).
"""

from __future__ import annotations

import math
import random
import re
import string
from collections import Counter
from typing import Callable, Sequence

from ..training.checks import as_count

__all__ = ["Z95", "mean", "mean_stderr", "interval95", "summarize", "mc_prediction", "multiple_choice", "perplexity",
           "count_words", "count_bytes", "rolling_metrics", "exact_match", "majority_vote", "maj_at_k", "pass_at_k",
           "bootstrap_interval"]

Z95 = 1.959963984540054          # the two-sided 95 % quantile of the normal distribution


def mean(values: Sequence[float]) -> float:
    if len(values) == 0:
        raise ValueError("mean: no values")
    return sum(values) / len(values)


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of the mean: sample standard deviation (n - 1) over sqrt(n), as lm-eval."""
    n = len(values)
    if n < 2:
        raise ValueError(f"mean_stderr: needs at least 2 values, got {n}")
    mu = mean(values)
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def interval95(values: Sequence[float]) -> tuple[float, float]:
    """mean -+ 1.96 standard errors (clipped to [0, 1] when every value is a 0/1 score)."""
    mu, half = mean(values), Z95 * mean_stderr(values)
    lo, hi = mu - half, mu + half
    if all(v in (0, 1) for v in values):
        lo, hi = max(0.0, lo), min(1.0, hi)
    return lo, hi


def mc_prediction(lls: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """(argmax of the log-likelihoods, argmax of log-likelihood / characters): the acc and acc_norm picks
    (ties: the first choice, as numpy's argmax)."""
    if len(lls) != len(choices) or not lls:
        raise ValueError(f"mc_prediction: {len(lls)} log-likelihoods for {len(choices)} choices")
    if any(len(c) == 0 for c in choices):
        raise ValueError("mc_prediction: a choice is the empty string (its length normalisation divides by 0)")
    norm = [ll / len(c) for ll, c in zip(lls, choices)]
    return max(range(len(lls)), key=lambda i: (lls[i], -i)), max(range(len(norm)), key=lambda i: (norm[i], -i))


def multiple_choice(items: Sequence[tuple[Sequence[float], Sequence[str], int]]) -> dict:
    """items: (log-likelihood of each choice, the choices, gold index) -> acc, acc_norm, their standard
    errors and 95 % intervals, and the per-item 0/1 scores."""
    acc, acc_norm = [], []
    for lls, choices, gold in items:
        if not 0 <= gold < len(choices):
            raise ValueError(f"multiple_choice: gold index {gold} is not one of the {len(choices)} choices")
        pick, pick_norm = mc_prediction(lls, choices)
        acc.append(float(pick == gold))
        acc_norm.append(float(pick_norm == gold))
    return {"n": len(acc), **summarize("acc", acc), **summarize("acc_norm", acc_norm)}


def summarize(name: str, scores: Sequence[float]) -> dict:
    """{name: mean, name_stderr, name_ci95, name_items} of per-item scores (no error for a single item)."""
    scores = list(scores)
    several = len(scores) > 1
    return {name: mean(scores), f"{name}_stderr": mean_stderr(scores) if several else None,
            f"{name}_ci95": interval95(scores) if several else None, f"{name}_items": scores}


def perplexity(lls: Sequence[float]) -> float:
    """exp(-mean log-likelihood): lm-eval's ``perplexity`` aggregation of loglikelihood items."""
    return math.exp(-mean(lls))


def count_words(text: str) -> int:
    """Words as lm-eval counts them for word perplexity: the pieces of ``re.split(r"\\s+", text)``."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def rolling_metrics(lls: Sequence[float], texts: Sequence[str]) -> dict:
    """Rolling log-likelihoods of whole texts -> word_perplexity, byte_perplexity, bits_per_byte."""
    if len(lls) != len(texts) or not texts:
        raise ValueError(f"rolling_metrics: {len(lls)} log-likelihoods for {len(texts)} texts")
    total = sum(lls)
    words, nbytes = sum(map(count_words, texts)), sum(map(count_bytes, texts))
    return {"word_perplexity": math.exp(-total / words), "byte_perplexity": math.exp(-total / nbytes),
            "bits_per_byte": -total / nbytes / math.log(2), "words": words, "bytes": nbytes}


def exact_match(predictions: Sequence[str], references: Sequence[str], ignore_case: bool = False,
                ignore_punctuation: bool = False, ignore_numbers: bool = False,
                regexes_to_ignore: Sequence[str] = ()) -> list[float]:
    """1.0 where the prediction equals the reference after the requested normalisations (per item)."""
    if len(predictions) != len(references):
        raise ValueError(f"exact_match: {len(predictions)} predictions for {len(references)} references")

    def norm(s: str) -> str:
        for pattern in regexes_to_ignore:
            s = re.sub(pattern, "", s)
        if ignore_case:
            s = s.lower()
        if ignore_punctuation:
            s = s.translate(str.maketrans("", "", string.punctuation))
        if ignore_numbers:
            s = s.translate(str.maketrans("", "", string.digits))
        return s

    return [float(norm(p) == norm(r)) for p, r in zip(predictions, references)]


def majority_vote(answers: Sequence[str]):
    """The most frequent answer; ties go to the one seen first (``Counter.most_common``)."""
    if len(answers) == 0:
        raise ValueError("majority_vote: no answers")
    return Counter(answers).most_common(1)[0][0]


def maj_at_k(samples: Sequence[Sequence[str]], references: Sequence[str], k: int) -> float:
    """Share of items whose majority answer among their first ``k`` sampled answers is the reference."""
    k = as_count("maj_at_k", "k", k)
    if len(samples) != len(references) or not samples:
        raise ValueError(f"maj_at_k: {len(samples)} items of samples for {len(references)} references")
    short = [i for i, s in enumerate(samples) if len(s) < k]
    if short:
        raise ValueError(f"maj_at_k: item {short[0]} has {len(samples[short[0]])} samples, fewer than k = {k}")
    return mean([float(majority_vote(s[:k]) == r) for s, r in zip(samples, references)])


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n - c, k) / C(n, k), computed as
    1 - prod_{i = n-c+1}^{n} (1 - k / i) (Chen et al. 2021, their numerically stable form)."""
    n, k = as_count("pass_at_k", "n", n), as_count("pass_at_k", "k", k, high=n)
    c = as_count("pass_at_k", "c", c, low=0, high=n)
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def bootstrap_interval(statistic: Callable[[list], float], items: Sequence, iters: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``items`` resampled with replacement
    (for statistics that are not means, such as a perplexity or bits per byte over documents)."""
    iters = as_count("bootstrap_interval", "iters", iters)
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_interval: level must be in (0, 1), got {level}")
    items, rnd = list(items), random.Random(seed)
    stats = sorted(statistic(rnd.choices(items, k=len(items))) for _ in range(iters))
    lo = stats[int(math.floor((1 - level) / 2 * (iters - 1)))]
    hi = stats[int(math.ceil((1 + level) / 2 * (iters - 1)))]
    return lo, hi
