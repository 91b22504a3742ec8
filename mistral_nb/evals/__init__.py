"""Evaluation: per-token losses and perplexity of a model on held-out text (``language``), the n-gram
baselines it is compared with (``ngram``), and what its attention heads do (``heads``)."""
