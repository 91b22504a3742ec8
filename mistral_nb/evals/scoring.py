"""Log-likelihood scoring as lm-evaluation-harness does it: the measurement behind most benchmark tables.

A benchmark item becomes one or more *requests* ``(context, continuation)``; the model's answer is
the summed log-probability of the continuation's tokens given the context, and whether each of
those tokens is the one greedy decoding would have picked. Multiple-choice accuracy, LAMBADA
accuracy and perplexity, and rolling perplexity of long documents are all made of this number.

Tokenization follows lm-eval's ``TemplateLM._encode_pair`` (``lm_eval/api/model.py``) and HFLM's
``tok_encode`` (``lm_eval/models/huggingface.py``), because tokenizing the pair differently gives a
different number:

* trailing whitespace of the context moves to the front of the continuation ("The cat " + "sat"
  is scored as "The cat" + " sat": sentencepiece glues a space to the word after it);
* context + continuation are encoded *together* and split at the length of the encoded context, so
  the continuation's tokens are the ones the whole text really has at that place;
* a text is encoded as the tokenizer does by default: ``<s>`` in front (unless the text already
  starts with the characters ``<s>``);
* an empty context becomes ``<s>`` (lm-eval's ``prefix_token_id``).

Scoring follows HFLM's ``_loglikelihood_tokens``: requests sorted longest first, batched with right
padding, one forward pass per batch, inputs cut from the left to ``max_length`` tokens; requests
whose model inputs are identical (one-token continuations of the same context, e.g. the letters of
MMLU) share one row, as lm-eval's ``Collator`` groups them. Only ``model(tokens)`` is used, so any
model that maps (B, S) ids to (B, S, V) logits works: float, bf16, int8, packed, on CPU or CUDA
(an object with a ``.logits`` attribute, as transformers returns, works too). One saving: a model
with a final ``norm`` and an ``output`` head, as ``Transformer`` has, gets a forward pre-hook on the
norm for the call, so that only the positions whose log-probabilities are read go through the norm
and the head (in the book's small models the 32,000-row head is most of the compute, and (B, S, V)
float32 logits are large); each position's numbers are the same.

Rolling log-likelihood (``loglikelihood_rolling``) cuts a long document into disjoint windows of at
most ``max_length`` predicted tokens, each with as much preceding text as fits, as lm-eval's
``get_rolling_token_windows(context_len=1)`` + ``make_disjoint_window`` do: every token is predicted
exactly once. The first window is read after the prefix ``<s>``; as in lm-eval 0.4 with a
tokenizer that adds ``<s>`` itself, the document's own leading ``<s>`` is then one of the predicted
tokens (its log-probability after ``<s>`` is part of the sum; ``evals.metrics`` divides the sum by
words or bytes).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..training.checks import as_count

__all__ = ["DEFAULT_MAX_LENGTH", "encode", "encode_pair", "rolling_windows", "score_tokens", "loglikelihood",
           "loglikelihood_rolling", "Scorer"]

DEFAULT_MAX_LENGTH = 2048        # lm-eval's HFLM default when a model states no maximum length


def _bos_text(tokenizer) -> str:
    return tokenizer.id_to_piece(tokenizer.bos_id) if hasattr(tokenizer, "id_to_piece") else "<s>"


def encode(tokenizer, text: str) -> list[int]:
    """``text`` as lm-eval's HFLM encodes it with a Mistral tokenizer: ``<s>`` + ids, or the ids alone
    when the text already begins with the characters ``<s>``."""
    if not isinstance(text, str):
        raise TypeError(f"encode: text must be a str, got {type(text).__name__}")
    return tokenizer.encode(text, bos=not text.startswith(_bos_text(tokenizer)))


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) of one request, tokenized as lm-eval does (module docstring)."""
    for name, value in (("context", context), ("continuation", continuation)):
        if not isinstance(value, str):
            raise TypeError(f"encode_pair: {name} must be a str, got {type(value).__name__}")
    if continuation == "":
        raise ValueError(f"encode_pair: the continuation of context {context[-40:]!r} is empty: nothing to score")
    if context == "":
        cont = tokenizer.encode(continuation, bos=False)
        return ([tokenizer.bos_id], cont) if cont[0] != tokenizer.bos_id else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole, head = encode(tokenizer, context + continuation), encode(tokenizer, context)
    return head, whole[len(head):]


def rolling_windows(tokens: Sequence[int], prefix_token: int, max_length: int) -> list[tuple[list[int], list[int]]]:
    """Disjoint (context, targets) windows that predict every id of ``tokens`` exactly once.

    The first window predicts tokens[:max_length] after ``prefix_token``; each later one predicts the
    next (up to) ``max_length`` ids after the ``max_length + 1 - len(targets)`` ids before them, so
    every window's model input is ``max_length`` ids long (the last one too: it gets a full context).
    """
    max_length = as_count("rolling_windows", "max_length", max_length)
    tokens = list(tokens)
    if not tokens:
        return []
    first = min(max_length, len(tokens))
    windows = [([prefix_token], tokens[:first])]
    start = first
    while start < len(tokens):
        end = min(len(tokens), start + max_length)
        windows.append((tokens[end - max_length - 1:start], tokens[start:end]))
        start = end
    return windows


def _device_of(model) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _model_inputs(requests, max_length: int) -> list[tuple[tuple[int, ...], list[int]]]:
    """Each (context ids, continuation ids) -> (the model's input ids, the ids to score at its end)."""
    out = []
    for i, (ctx, cont) in enumerate(requests):
        ctx, cont = [int(t) for t in ctx], [int(t) for t in cont]
        if not ctx or not cont:
            raise ValueError(f"score_tokens: request {i} has an empty {'context' if not ctx else 'continuation'}; "
                             "a context needs at least one id (e.g. <s>) and a continuation one id to score")
        if len(cont) > max_length:
            raise ValueError(f"score_tokens: request {i} has a continuation of {len(cont)} tokens, longer than "
                             f"max_length = {max_length}")
        out.append((tuple((ctx + cont)[-(max_length + 1):][:-1]), cont))
    return out


def _positions_only(model, keep: torch.Tensor):
    """A forward pre-hook on the model's final norm that keeps only the hidden states at ``keep`` (B, K):
    the norm and the output head then run on K positions per row instead of S (or None if the model
    has no ``norm`` + ``output`` pair, like ``Transformer``'s, to hook)."""
    norm = getattr(model, "norm", None)
    if not isinstance(norm, torch.nn.Module) or not isinstance(getattr(model, "output", None), torch.nn.Module):
        return None

    def pick(module, args):
        h = args[0]                                                           # (B, S, dim)
        return (h.gather(1, keep.to(h.device)[..., None].expand(-1, -1, h.shape[-1])),) + tuple(args[1:])

    return norm.register_forward_pre_hook(pick)


def _forward(model, rows: list[tuple[int, ...]], last: list[int], device) -> torch.Tensor:
    """Right-padded (B, L) ids through the model -> logits (B, K, V) of the last ``last[b]`` positions of
    each row (right-aligned in K = max(last): row b's are [K - last[b], K))."""
    L, K = max(len(r) for r in rows), max(last)
    tokens = torch.zeros(len(rows), L, dtype=torch.long)
    keep = torch.zeros(len(rows), K, dtype=torch.long)
    for b, (r, n) in enumerate(zip(rows, last)):
        tokens[b, :len(r)] = torch.tensor(r, dtype=torch.long)
        keep[b] = torch.arange(len(r) - K, len(r)).clamp(min=0)           # row b's last K positions
    hook = _positions_only(model, keep)
    try:
        out = model(tokens.to(device))
    finally:
        if hook is not None:
            hook.remove()
    logits = getattr(out, "logits", out)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[0] != len(rows) \
            or logits.shape[1] != (K if hook is not None else L):
        raise ValueError(f"score_tokens: the model must map ids (B, S) = {tuple(tokens.shape)} to logits (B, S, V), "
                         f"got {getattr(logits, 'shape', type(logits).__name__)}")
    if hook is None:                                                      # full logits: take each row's last K
        logits = logits.gather(1, keep.to(logits.device)[..., None].expand(-1, -1, logits.shape[-1]))
    return logits


@torch.no_grad()
def score_tokens(model, requests: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 8,
                 max_length: int = DEFAULT_MAX_LENGTH, progress: bool = False,
                 desc: str = "scoring") -> list[tuple[float, bool]]:
    """(log-probability of the continuation, is it the greedy continuation) for each (context ids,
    continuation ids), in the order given. Batching and grouping as in the module docstring."""
    from tqdm.auto import tqdm

    batch_size = as_count("score_tokens", "batch_size", batch_size)
    max_length = as_count("score_tokens", "max_length", max_length)
    inputs = _model_inputs(requests, max_length)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (row, _) in enumerate(inputs):
        groups.setdefault(row, []).append(i)
    order = sorted(groups, key=lambda row: (-len(row), row))          # longest first, as lm-eval's Collator
    if hasattr(model, "eval"):
        model.eval()
    device, results = _device_of(model), [None] * len(inputs)
    with tqdm(total=len(inputs), desc=desc, disable=not progress) as bar:
        for b0 in range(0, len(order), batch_size):
            rows = order[b0:b0 + batch_size]
            last = [max(len(inputs[i][1]) for i in groups[row]) for row in rows]
            logits = _forward(model, rows, last, device)                         # (B, K, V)
            K = logits.shape[1]
            for b, row in enumerate(rows):
                for i in groups[row]:
                    cont = torch.tensor(inputs[i][1], device=logits.device)
                    picked = logits[b, K - len(cont):].float()                    # (c, V)
                    logprobs = torch.log_softmax(picked, dim=-1).gather(-1, cont[:, None])[:, 0]
                    results[i] = (float(logprobs.sum()), bool((picked.argmax(-1) == cont).all()))
                bar.update(len(groups[row]))
    return results


def loglikelihood(model, tokenizer, pairs: Sequence[tuple[str, str]], batch_size: int = 8,
                  max_length: int = DEFAULT_MAX_LENGTH, progress: bool = False) -> list[tuple[float, bool]]:
    """(log p(continuation | context), is greedy) for each (context, continuation) text pair."""
    requests = [encode_pair(tokenizer, c, x) for c, x in _pairs(pairs)]
    return score_tokens(model, requests, batch_size, max_length, progress, desc="loglikelihood")


def _pairs(pairs) -> list[tuple[str, str]]:
    pairs = list(pairs)
    for i, p in enumerate(pairs):
        if not isinstance(p, (tuple, list)) or len(p) != 2:
            raise TypeError(f"loglikelihood: request {i} must be a (context, continuation) pair, got {p!r:.80}")
    return pairs


def loglikelihood_rolling(model, tokenizer, texts: Sequence[str], batch_size: int = 8,
                          max_length: int = DEFAULT_MAX_LENGTH, progress: bool = False) -> list[float]:
    """The log-probability of each whole text, in disjoint windows of ``max_length`` (module docstring)."""
    if isinstance(texts, str):
        raise TypeError("loglikelihood_rolling: texts must be a list of strings, not one string (wrap it: [text])")
    windows, owner = [], []
    for i, text in enumerate(texts):
        w = rolling_windows(encode(tokenizer, text), tokenizer.bos_id, max_length)
        windows += w
        owner += [i] * len(w)
    scores = score_tokens(model, windows, batch_size, max_length, progress, desc="loglikelihood_rolling")
    totals = [0.0] * len(texts)
    for i, (ll, _) in zip(owner, scores):
        totals[i] += ll
    return totals


class Scorer:
    """A model, its tokenizer and the scoring settings in one object: what ``evals.harness`` runs a
    task with (``evals.baselines.NgramScorer`` has the same three methods)."""

    def __init__(self, model, tokenizer, batch_size: int = 8, max_length: int = DEFAULT_MAX_LENGTH,
                 max_gen_toks: int = 256, progress: bool = False):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = as_count("Scorer", "batch_size", batch_size)
        self.max_length = as_count("Scorer", "max_length", max_length)
        self.max_gen_toks = as_count("Scorer", "max_gen_toks", max_gen_toks)
        self.progress = progress

    def loglikelihood(self, pairs, progress: Optional[bool] = None) -> list[tuple[float, bool]]:
        return loglikelihood(self.model, self.tokenizer, pairs, self.batch_size, self.max_length,
                             self.progress if progress is None else progress)

    def loglikelihood_rolling(self, texts, progress: Optional[bool] = None) -> list[float]:
        return loglikelihood_rolling(self.model, self.tokenizer, texts, self.batch_size, self.max_length,
                                     self.progress if progress is None else progress)

    def generate_until(self, contexts, gen_kwargs: Optional[dict] = None, progress: Optional[bool] = None,
                       seed: Optional[int] = None) -> list[str]:
        """Continue each context as lm-eval's ``generate_until`` does (``evals.generation``)."""
        from .generation import generate_until, normalize_gen_kwargs

        kw = normalize_gen_kwargs(gen_kwargs or {}, self.max_gen_toks)
        return generate_until(self.model, self.tokenizer, contexts, until=kw["until"], max_gen_toks=kw["max_gen_toks"],
                              temperature=kw["temperature"], top_p=kw["top_p"], seed=seed,
                              batch_size=self.batch_size, max_length=self.max_length,
                              progress=self.progress if progress is None else progress)
