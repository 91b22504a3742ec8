"""Evaluation: per-token losses and perplexity of a model on held-out text (``language``), the n-gram
baselines it is compared with (``ngram``), and what its attention heads do (``heads``); benchmark
scoring as lm-evaluation-harness does it (``scoring``, ``generation``, ``fewshot``, ``metrics``),
tasks run from lm-eval task files (``harness``, ``baselines``), and ``MistralLM``, the model as an
lm-eval ``LM`` (``lm_eval_model``).

``from mistral_nb.evals import MistralLM`` imports lm_eval; ``import mistral_nb.evals`` does not
(the package works without it): the name is resolved on first use (PEP 562).
"""

__all__ = ["MistralLM"]


def __getattr__(name):
    if name == "MistralLM":
        from .lm_eval_model import MistralLM

        return MistralLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
