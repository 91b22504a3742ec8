"""Text generation: chunked prefill into the rolling cache, then one token at a time.

    prompts of different lengths --left-pad--> (B, L) tokens, positions (negative = padding)
    prefill: chunks of W tokens, each attending to the cache (last W positions) plus itself
    decode:  sample a token from the last logits (greedy / temperature / top-p), feed it back

Sampling follows Mistral's reference code: temperature scales the logits, top-p keeps the smallest
set of most likely tokens whose probability mass reaches p.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Callable, List, Optional, Sequence, Union

import torch

from .cache import RollingBufferCache

EOS_CHECK_EVERY = 8   # decode steps between host reads of "has every row reached eos?"
MAX_NEW_TOKENS = 1 << 20   # generate allocates its (B, max_new_tokens) output up front
MIN_SLOTS = 256            # first cache size of a model without a sliding window (then doubled as needed)


def top_p_keep(probs_sorted: torch.Tensor, p: float) -> torch.Tensor:
    """Which of the probabilities, sorted from most to least likely along the last dimension, nucleus
    sampling keeps: those whose *preceding* mass is <= p (so the most likely token always stays)."""
    mass_before = torch.cumsum(probs_sorted, dim=-1) - probs_sorted
    return mass_before <= p


def sample_top_p(probs: torch.Tensor, p: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Nucleus sampling. probs (B, V) -> token ids (B,).

    Sort, keep tokens while the mass *before* them is <= p (so the top token is always kept),
    renormalise, sample.
    """
    probs_sorted, order = torch.sort(probs, dim=-1, descending=True)            # (B, V)
    probs_sorted = probs_sorted.masked_fill(~top_p_keep(probs_sorted, p), 0.0)
    probs_sorted = probs_sorted / probs_sorted.sum(dim=-1, keepdim=True)
    choice = torch.multinomial(probs_sorted, num_samples=1, generator=generator)  # (B, 1)
    return order.gather(-1, choice).squeeze(-1)


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Pick the next token from logits (B, V): argmax when temperature == 0, else sample. -> (B,)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    try:
        if top_p < 1.0:
            return sample_top_p(probs, top_p, generator)
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
    except RuntimeError as e:               # torch.multinomial refuses NaN / inf probabilities
        if bool(torch.isfinite(logits).all()):
            raise
        raise ValueError("sample_next: the logits hold NaN or inf, so no token can be sampled "
                         "(check the model's weights, or run it in a wider dtype)") from e


def compiled_decoder(model, mode: Optional[str] = None):
    """``model`` under ``torch.compile`` for decode steps: one token per row, static shapes.

    A decode step is a few hundred small operations around the weight products; compiled, they are
    fused into a few kernels and Python's per-operation overhead disappears. Every step has the same
    shapes — B tokens in, W cached keys (the rolling cache writes the new token first) — so the
    step compiles once per batch size and never again. The compiled module is kept on the model
    (outside its state_dict), so later ``generate`` calls reuse it. ``mode``: ``torch.compile``'s
    mode; ``"reduce-overhead"`` records each step as a CUDA graph on a GPU (``generate`` then marks
    the cache buffers as static inputs).
    """
    compiled = model.__dict__.setdefault("_compiled_decoders", {})
    if mode not in compiled:
        compiled[mode] = torch.compile(model, mode=mode, dynamic=False, fullgraph=True)
    return compiled[mode]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0, device=None):
    """Right-align prompts in a (B, L) tensor. Returns (tokens, positions); padding gets negative positions."""
    L = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), L), pad_id, dtype=torch.long)
    for r, p in enumerate(prompts):
        tokens[r, L - len(p):] = torch.tensor(list(p), dtype=torch.long)
    lengths = torch.tensor([len(p) for p in prompts])
    positions = torch.arange(L)[None, :] - (L - lengths)[:, None]                # (B, L)
    return tokens.to(device), positions.to(device)


@torch.inference_mode()
def prefill(model, tokens: torch.Tensor, positions: torch.Tensor, cache: RollingBufferCache,
            chunk_size: Optional[int] = None) -> torch.Tensor:
    """Run the prompt through the model in chunks of at most W tokens; return the last logits (B, V)."""
    chunk = cache.window if chunk_size is None else _as_int("chunk_size", chunk_size, 1)
    if not 0 < chunk <= cache.window:
        raise ValueError(f"chunk_size must be in [1, {cache.window}] (the cache window), got {chunk}")
    L = tokens.shape[1]
    logits = None
    for c0 in range(0, L, chunk):
        logits = model(tokens[:, c0:c0 + chunk], cache=cache, positions=positions[:, c0:c0 + chunk],
                       last_only=True)
    return logits[:, -1]


def _as_int(name: str, value, low: int, high: Optional[int] = None) -> int:
    """``value`` as a Python int (an int, a numpy integer or a 0-d integer tensor; never a bool), in
    [low, high]: TypeError naming the argument for another type, ValueError for a value out of range."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})") from None
    if v < low or (high is not None and v > high):
        raise ValueError(f"{name} must be an int in [{low}, {'...' if high is None else high}], got {v}")
    return v


def _as_real(name: str, value, rule: str, ok) -> float:
    """``value`` as a finite float satisfying ``ok``: TypeError for a non-number, ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not (math.isfinite(v) and ok(v)):
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return v


def _prompt_lists(prompts, vocab: int) -> List[List[int]]:
    """Prompts as lists of Python ints, each checked: a list of lists / 1-D arrays / 1-D tensors, or
    one 2-D array or tensor (one prompt per row)."""
    if not isinstance(prompts, (list, tuple)) and hasattr(prompts, "ndim") and hasattr(prompts, "tolist"):
        if prompts.ndim != 2:
            raise ValueError(f"prompts given as an array or tensor must be 2-D (one prompt per row), got "
                             f"{prompts.ndim}-D; wrap a single prompt in a list: [prompt]")
        prompts = list(prompts)
    if not isinstance(prompts, (list, tuple)) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of token-id lists")
    out = []
    for r, p in enumerate(prompts):
        if hasattr(p, "ndim") and hasattr(p, "tolist"):          # numpy array or tensor
            if p.ndim != 1:
                raise ValueError(f"prompt {r} must be 1-D (a sequence of token ids), got shape {tuple(p.shape)}")
            p = p.tolist()
        if isinstance(p, (str, bytes)) or not isinstance(p, Sequence):
            raise TypeError(f"prompt {r} must be a list of token ids, got {type(p).__name__}")
        if len(p) == 0:
            raise ValueError(f"prompt {r} is empty: every prompt needs at least one token (e.g. BOS)")
        row = []
        for i, t in enumerate(p):
            try:
                t = _as_int("token id", t, -math.inf)
            except TypeError:
                raise TypeError(f"prompt {r}, position {i}: token ids must be ints, got {t!r}") from None
            if not 0 <= t < vocab:
                raise ValueError(f"prompt {r}, position {i}: token id {t} is outside [0, {vocab})")
            row.append(t)
        out.append(row)
    return out


def _check_generate_args(model, prompts, max_new_tokens, temperature, top_p, eos_id=None, seed=None,
                         chunk_size=None, on_token=None) -> tuple:
    """Validate generate's arguments; return them normalised (prompts as lists of ints, numbers as
    Python ints and floats). TypeError for a wrong type, ValueError for a wrong value, each naming
    the argument (and, for a token id, the prompt and position)."""
    vocab, window = model.args.vocab_size, model.args.sliding_window
    prompts = _prompt_lists(prompts, vocab)
    max_new_tokens = _as_int("max_new_tokens", max_new_tokens, 0, MAX_NEW_TOKENS)
    temperature = _as_real("temperature", temperature, "a finite number >= 0 (0 = greedy)", lambda v: v >= 0)
    top_p = _as_real("top_p", top_p, "in (0, 1]", lambda v: 0 < v <= 1)
    if eos_id is not None:
        eos_id = _as_int("eos_id", eos_id, 0, vocab - 1)
    if seed is not None:
        seed = _as_int("seed", seed, -(2 ** 63), 2 ** 64 - 1)          # what torch.Generator accepts
    if chunk_size is not None:
        chunk_size = _as_int("chunk_size", chunk_size, 1, window)
    if on_token is not None and not callable(on_token):
        raise TypeError(f"on_token must be a function of the step's tokens, got {type(on_token).__name__}")
    return prompts, max_new_tokens, temperature, top_p, eos_id, seed, chunk_size


def _cache_slots(model, prompt_len: int, needed: int, compile) -> int:
    """Slots of the cache ``generate`` starts with, for a prompt of ``prompt_len`` tokens and a
    sequence of ``needed`` positions.

    With a sliding window: the window, or fewer when the whole sequence is shorter (a 3-token prompt
    must not reserve W slots of every layer); a compiled decode step keeps all W slots, so that every
    call has the same shapes. Without a window the cache must hold the whole sequence: it starts at
    the power of two that holds the prompt (at least ``MIN_SLOTS``) and ``_grow_if_full`` doubles it
    as the sequence grows, so memory follows what is generated and a compiled step sees few shapes."""
    W = model.args.sliding_window
    if W:
        return W if compile else min(W, needed)
    first = max(MIN_SLOTS, 1 << (prompt_len - 1).bit_length())
    return first if compile else min(first, needed)


def _grow_if_full(cache: RollingBufferCache, model, position: int, needed: int, compile) -> bool:
    """Double a window-less model's cache (never beyond ``needed``) before ``position`` would not fit;
    True if it grew."""
    if model.args.sliding_window is not None or position < cache.window:
        return False
    bigger = 2 * cache.window
    cache.grow(bigger if compile else min(bigger, needed))
    return True


def _decoder(model, cache: RollingBufferCache, compile):
    """The module decode steps run through: the model, or its compiled decode step."""
    if not compile:
        return model
    mode = compile if isinstance(compile, str) else None
    if mode == "reduce-overhead":   # a CUDA graph may write into these only at fixed addresses
        for buf in (cache.k, cache.v, cache.slot_pos, cache.next_pos):
            torch._dynamo.mark_static_address(buf)
    return compiled_decoder(model, mode)


def _check_finite_logits(bad: torch.Tensor, step: int) -> None:
    """ValueError when a row's logits were NaN or infinite (a model with non-finite weights, or one
    that overflowed in float16): its tokens would be meaningless."""
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(f"generate: the model's logits are not finite (NaN or inf) for prompt row(s) {rows[:8]} "
                         f"by step {step}: check its weights for NaN/inf, or run it in a wider dtype")


def _trim_at_eos(out: torch.Tensor, eos_id: Optional[int]) -> List[List[int]]:
    result = []
    for row in out.tolist():
        if eos_id is not None and eos_id in row:
            row = row[:row.index(eos_id)]
        result.append(row)
    return result


@torch.inference_mode()
def generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64, temperature: float = 0.0,
             top_p: float = 1.0, eos_id: Optional[int] = None, seed: Optional[int] = None,
             chunk_size: Optional[int] = None, progress: Optional[bool] = None,
             compile: Union[bool, str] = False,
             on_token: Optional[Callable[[torch.Tensor], None]] = None) -> List[List[int]]:
    """Continue each prompt (a list of token ids; lengths may differ) by up to ``max_new_tokens`` tokens.

    temperature 0 = greedy; otherwise sample, with nucleus ``top_p``. A row stops at ``eos_id`` (the
    eos token is not included). ``seed`` makes sampling reproducible. Returns the new tokens only.
    ``progress``: tqdm bar over decode steps (default: when max_new_tokens >= 256).
    ``compile``: run decode steps through ``compiled_decoder`` (True, or a ``torch.compile`` mode such
    as ``"reduce-overhead"``). The first call compiles (tens of seconds); the prefill stays eager.
    ``on_token``: called with the (B,) tokens of every step as soon as they are sampled (to stream
    text, or to time each step).
    Raises ValueError if the model's logits turn out NaN or infinite.
    """
    prompts, max_new_tokens, temperature, top_p, eos_id, seed, chunk_size = _check_generate_args(
        model, prompts, max_new_tokens, temperature, top_p, eos_id, seed, chunk_size, on_token)
    B = len(prompts)
    if max_new_tokens == 0:
        return [[] for _ in range(B)]
    device = next(model.parameters()).device
    tokens, positions = left_pad(prompts, device=device)
    L = tokens.shape[1]
    needed = L + max_new_tokens - 1            # the last sampled token is never fed back
    cache = RollingBufferCache.for_model(model, B, window=_cache_slots(model, L, needed, compile))
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    if chunk_size is not None:   # checked against W above; a cache shorter than W holds the whole prompt anyway
        chunk_size = min(chunk_size, cache.window)
    logits = prefill(model, tokens, positions, cache, chunk_size)                 # (B, V)
    step_model = _decoder(model, cache, compile)
    out = torch.empty(B, max_new_tokens, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    bad = ~torch.isfinite(logits).all(dim=-1)                                     # (B,)
    _check_finite_logits(bad, 0)
    from tqdm.auto import tqdm
    n = 0
    for step in tqdm(range(max_new_tokens), desc="generating",
                     disable=not (progress if progress is not None else max_new_tokens >= 256)):
        next_tok = sample_next(logits, temperature, top_p, generator)            # (B,)
        out[:, step] = next_tok
        if on_token is not None:
            on_token(next_tok)
        n = step + 1
        if eos_id is not None:
            done |= next_tok == eos_id
        # reading flags back stalls a GPU pipeline: look only every EOS_CHECK_EVERY steps
        # (rows that finished earlier are trimmed at their eos below)
        if n % EOS_CHECK_EVERY == 0:
            _check_finite_logits(bad, n)
            if eos_id is not None and bool(done.all()):
                break
        if n < max_new_tokens:
            if _grow_if_full(cache, model, L + step, needed, compile):
                step_model = _decoder(model, cache, compile)           # new buffers: mark them static again
            logits = step_model(next_tok[:, None], cache=cache, check=False)[:, -1]  # (B, V)
            bad |= ~torch.isfinite(logits).all(dim=-1)
    _check_finite_logits(bad, n)
    return _trim_at_eos(out[:, :n], eos_id)
