"""Generation requests as lm-evaluation-harness runs them: continue a context until a stop string.

GSM8K, HumanEval, TriviaQA and the like are scored on *generated* text: the model continues the
prompt (greedy, or sampled k times for maj@k and pass@k), the continuation is cut at the first stop
string (e.g. ``"\\n\\n"`` or ``"Question:"``), an answer is extracted from it (e.g. the number after
``####``), and compared with the reference. This module does the generating and the extracting the
way lm-eval's HFLM ``generate_until`` and its ``regex`` filter do:

* the context is encoded as HFLM encodes it (``<s>`` in front) and cut from the left so that
  context + ``max_gen_toks`` new tokens fit in ``max_length``;
* requests are run longest first, in batches (``mistral_nb.generate``: left-padded, rolling cache);
  a row stops at ``</s>``, and a batch stops once every row's text holds a stop string;
* the new tokens are decoded on their own (so the text of a first token "▁Paris" is "Paris"), and cut
  before each stop string in turn, as lm-eval's ``postprocess_generated_text`` does.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import torch

from ..training.checks import as_count, as_real
from .scoring import DEFAULT_MAX_LENGTH, encode

__all__ = ["STOP_CHECK_EVERY", "normalize_gen_kwargs", "cut_at_stop", "generate_until", "extract_answer"]

STOP_CHECK_EVERY = 4        # decode steps between looks for a stop string (each look decodes every row)


def normalize_gen_kwargs(gen_kwargs: dict, default_max_gen_toks: int = 256) -> dict:
    """lm-eval's generation settings -> {until: [str], max_gen_toks, temperature, top_p}.

    As lm-eval's ``normalize_gen_kwargs``: ``until`` may be one string or a list; the number of new
    tokens may be called ``max_gen_toks``, ``max_new_tokens``, ``max_tokens`` or
    ``max_completion_tokens`` (in that priority); ``do_sample: false`` (or no ``do_sample`` and no
    positive temperature) means greedy."""
    if not isinstance(gen_kwargs, dict):
        raise TypeError(f"gen_kwargs must be a dict of generation settings, got {type(gen_kwargs).__name__}")
    until = gen_kwargs.get("until", [])
    until = [until] if isinstance(until, str) else list(until)
    if not all(isinstance(u, str) for u in until):
        raise TypeError(f"gen_kwargs: until must be a string or a list of strings, got {gen_kwargs['until']!r}")
    sizes = [gen_kwargs[k] for k in ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")
             if gen_kwargs.get(k) is not None]
    max_gen_toks = as_count("gen_kwargs", "max_gen_toks", sizes[0] if sizes else default_max_gen_toks)
    temperature = as_real("gen_kwargs", "temperature", gen_kwargs.get("temperature", 0.0), "a number >= 0",
                          lambda v: v >= 0)
    do_sample = gen_kwargs.get("do_sample")
    if do_sample is False or (do_sample is None and temperature == 0):
        temperature = 0.0
    top_p = as_real("gen_kwargs", "top_p", gen_kwargs.get("top_p", 1.0), "in (0, 1]", lambda v: 0 < v <= 1)
    return {"until": until, "max_gen_toks": max_gen_toks, "temperature": temperature, "top_p": top_p}


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """``text`` cut before each stop string in turn (empty stop strings are ignored), as lm-eval does."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


class _AllStopped(Exception):
    """Raised from ``generate``'s per-step callback once every row has a stop string: ends the batch."""


def _watcher(tokenizer, until: Sequence[str], eos_id: int):
    """A per-step callback that collects the tokens of each row and ends generation early."""
    steps: list[torch.Tensor] = []
    stops = [s for s in until if s]

    def rows() -> list[list[int]]:
        out = []
        for row in torch.stack(steps, dim=1).tolist() if steps else []:
            out.append(row[:row.index(eos_id)] if eos_id in row else row)
        return out

    def on_token(tok: torch.Tensor) -> None:
        steps.append(tok.detach())
        if stops and len(steps) % STOP_CHECK_EVERY == 0:
            full = torch.stack(steps, dim=1).tolist()
            if all(eos_id in r or any(s in tokenizer.decode(r) for s in stops) for r in full):
                raise _AllStopped

    return on_token, rows


def _generate_batch(model, tokenizer, prompts, until, max_gen_toks, temperature, top_p, seed) -> list[list[int]]:
    from ..generate import generate

    on_token, rows = _watcher(tokenizer, until, tokenizer.eos_id)
    try:
        generate(model, prompts, max_new_tokens=max_gen_toks, temperature=temperature, top_p=top_p,
                 eos_id=tokenizer.eos_id, seed=seed, progress=False, on_token=on_token)
    except _AllStopped:
        pass
    return rows()


def generate_until(model, tokenizer, contexts: Sequence[str], until: Sequence[str] = (), max_gen_toks: int = 256,
                   temperature: float = 0.0, top_p: float = 1.0, seed: Optional[int] = None, batch_size: int = 8,
                   max_length: int = DEFAULT_MAX_LENGTH, progress: bool = False) -> list[str]:
    """The continuation of each context, cut at the stop strings (module docstring), in the order given.

    temperature 0 is greedy; otherwise tokens are sampled (nucleus ``top_p``); ``seed`` seeds each
    batch's sampling (None: torch's global generator, which lm-eval seeds with 1234)."""
    from tqdm.auto import tqdm

    if isinstance(contexts, str):
        raise TypeError("generate_until: contexts must be a list of strings, not one string (wrap it: [context])")
    until = [until] if isinstance(until, str) else list(until)
    eos_text = tokenizer.id_to_piece(tokenizer.eos_id)
    if eos_text not in until:                       # HFLM adds the text of </s> to the stop strings
        until.append(eos_text)
    max_gen_toks = as_count("generate_until", "max_gen_toks", max_gen_toks)
    batch_size = as_count("generate_until", "batch_size", batch_size)
    max_length = as_count("generate_until", "max_length", max_length)
    if max_gen_toks >= max_length:
        raise ValueError(f"generate_until: max_gen_toks ({max_gen_toks}) must be less than max_length ({max_length}), "
                         "which must also hold the context")
    keep = max_length - max_gen_toks
    prompts = [encode(tokenizer, c)[-keep:] for c in contexts]
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), contexts[i]))   # longest first
    out: list[Optional[str]] = [None] * len(prompts)
    with tqdm(total=len(prompts), desc="generate_until", disable=not progress) as bar:
        for b0 in range(0, len(order), batch_size):
            idx = order[b0:b0 + batch_size]
            new = _generate_batch(model, tokenizer, [prompts[i] for i in idx], until, max_gen_toks, temperature,
                                  top_p, None if seed is None else seed + b0)
            for i, ids in zip(idx, new):
                out[i] = cut_at_stop(tokenizer.decode(ids), until)
            bar.update(len(idx))
    return out


def extract_answer(text: str, pattern: str = r"#### (\-?[0-9\.\,]+)", select: int = 0,
                   fallback: str = "[invalid]") -> str:
    """The answer in a generated text, as lm-eval's ``regex`` filter finds it: every match of
    ``pattern`` (its group, if it has one), the ``select``-th of them (-1: the last), stripped; or
    ``fallback`` when nothing matches. The default pattern is GSM8K's "strict match" (``#### 42``)."""
    found = re.findall(pattern, text if isinstance(text, str) else "")
    if not found:
        return fallback
    match = found[select]
    if isinstance(match, tuple):                                   # several groups: the first non-empty one
        match = next((m for m in match if m), fallback)
    return match.strip()
