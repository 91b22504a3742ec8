"""``MistralLM``: this package's Transformer as a model of EleutherAI's lm-evaluation-harness.

    import lm_eval
    from mistral_nb.evals import MistralLM
    lm = MistralLM(model, tokenizer, batch_size=8)
    lm_eval.simple_evaluate(model=lm, tasks=["hellaswag"])          # or any task lm-eval knows

lm-eval hands a model three kinds of request (``lm_eval.api.model.LM``): ``loglikelihood``
(context, continuation), ``loglikelihood_rolling`` (a whole text) and ``generate_until`` (context,
generation settings). Each is answered by ``evals.scoring`` / ``evals.generation``, which tokenize,
batch and cut exactly as lm-eval's own ``HFLM`` does for a Hugging Face model, so the two give the
same numbers (``tests/test_evals_lm_eval.py``). This module is the only one that imports lm_eval;
``mistral_nb.evals`` loads it on first use of ``MistralLM``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from lm_eval.api.model import LM

from .generation import normalize_gen_kwargs
from .scoring import DEFAULT_MAX_LENGTH, Scorer

__all__ = ["MistralLM", "save_for_hflm"]


def save_for_hflm(model, folder) -> Path:
    """Write ``model`` where lm-eval's ``HFLM(pretrained=folder)`` can load it: Hugging Face's layout
    (transformers' MistralForCausalLM) plus Mistral's v0.1 tokenizer file, which transformers reads
    with its ``MistralCommonBackend`` (sentencepiece through Mistral's mistral_common), so HFLM
    tokenizes exactly as ``Tokenizer.mistral_v1()`` does. (A tokenizer converted to transformers' own
    BPE splits runs of spaces differently, which would change the requests.) Returns the folder."""
    from ..checkpoint import save_checkpoint
    from ..tokenizer.model_file import mistral_v1_model_bytes

    folder = Path(folder)
    save_checkpoint(model, folder, layout="hf")
    (folder / "tokenizer.model.v1").write_bytes(mistral_v1_model_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MistralCommonBackend"}) + "\n")
    return folder


class MistralLM(LM):
    """lm-eval's LM interface over a ``Transformer`` (or any model mapping ids (B, S) to logits (B, S, V))
    and a ``Tokenizer``. ``max_length``: the longest model input (contexts are cut from the left,
    rolling windows are this long); ``max_gen_toks``: new tokens when a task does not say; ``seed``:
    of sampled generation (None: torch's global generator, which ``simple_evaluate`` seeds);
    ``progress``: progress bars (unless lm-eval asks for none)."""

    def __init__(self, model, tokenizer, batch_size: int = 8, max_length: int = DEFAULT_MAX_LENGTH,
                 max_gen_toks: int = 256, seed: Optional[int] = None, progress: bool = True):
        super().__init__()
        self.scorer = Scorer(model, tokenizer, batch_size=batch_size, max_length=max_length,
                             max_gen_toks=max_gen_toks, progress=progress)
        self.model, self.tokenizer, self.seed = model, tokenizer, seed

    @property
    def batch_size(self) -> int:
        return self.scorer.batch_size

    @property
    def max_length(self) -> int:
        return self.scorer.max_length

    @property
    def tokenizer_name(self) -> str:
        return type(self.tokenizer).__name__

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        args = [tuple(r.args[:2]) for r in requests]
        out = self.scorer.loglikelihood(args, progress=self.scorer.progress and not disable_tqdm)
        for a, res in zip(args, out):
            self.cache_hook.add_partial("loglikelihood", a, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        texts = [r.args[0] for r in requests]
        out = self.scorer.loglikelihood_rolling(texts, progress=self.scorer.progress and not disable_tqdm)
        for t, res in zip(texts, out):
            self.cache_hook.add_partial("loglikelihood_rolling", (t,), res)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Requests with the same generation settings run together (as HFLM groups them)."""
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(repr(sorted(r.args[1].items())), []).append(i)
        out: list[Optional[str]] = [None] * len(requests)
        for idx in groups.values():
            kwargs = requests[idx[0]].args[1]
            normalize_gen_kwargs(kwargs, self.scorer.max_gen_toks)          # refuse bad settings before running
            texts = self.scorer.generate_until([requests[i].args[0] for i in idx], kwargs,
                                               progress=self.scorer.progress and not disable_tqdm, seed=self.seed)
            for i, text in zip(idx, texts):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out
