"""Supervised fine-tuning (SFT): conversations in the chat format, answers as the only targets.

A base model is trained on text; an instruct model on conversations. SFT keeps the next-token
objective and changes only the data and which targets count. A conversation is encoded as
``Tokenizer.encode_chat`` lays it out (Mistral's v1 format, ``tokenizer/chat.py``)::

    <s>[INST] question [/INST] answer</s>[INST] next question [/INST] next answer</s>

and only the tokens of the assistant's answers, each with its closing ``</s>``, are scored: the
model learns to answer and to stop, not to write questions. Every other target is ``IGNORE``.
The answer is encoded as ``mistral_common`` encodes an assistant turn (its text on its own, so it
gets its own leading '▁', then the ``</s>`` id); the test compares the scored positions with
``mistral_common``'s own encoding.

Conversations are short next to a training window, so several are **packed** into one row. Each
keeps its own segment id: attention stays inside a segment (``masks.same_segment``) and RoPE
positions restart at each segment's start, so a packed row gives exactly the logits of its
conversations run one by one. The alternative is **padding**: one conversation per row, the row
filled up with unscored ``pad_id`` tokens at the end (causal attention never looks ahead, so
padding at the end changes nothing before it).

``fit`` is the optimisation loop of fine-tuning (AdamW on the parameters that require a gradient,
warm-up and cosine decay, clipping), for any loss of a batch: SFT's here, DPO's in ``dpo.py``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .loop import IGNORE, TrainHistory, lr_at, param_groups

__all__ = ["Example", "Batch", "encode_example", "examples_from_chats", "pad_batch", "pack_groups", "packed_batch",
           "sft_batches", "sft_loss", "fit", "peak_memory"]


@dataclass
class Example:
    """One training conversation: ``ids`` (``<s>`` ... ``</s>``) and, per id, whether it is scored
    (part of an assistant answer, its ``</s>`` included)."""
    ids: list
    scored: list

    def __len__(self) -> int:
        return len(self.ids)

    def shifted(self) -> tuple[list, list]:
        """(inputs, targets): position i reads ids[:i + 1] and is asked for ids[i + 1] if it is scored."""
        return self.ids[:-1], [t if s else IGNORE for t, s in zip(self.ids[1:], self.scored[1:])]


@dataclass
class Batch:
    """Model inputs (B, S), targets (B, S) with ``IGNORE`` where unscored, and, for packed rows,
    segment ids (B, S)."""
    tokens: torch.Tensor
    targets: torch.Tensor
    segments: Optional[torch.Tensor] = None

    def to(self, device) -> "Batch":
        seg = None if self.segments is None else self.segments.to(device)
        return Batch(self.tokens.to(device), self.targets.to(device), seg)


def encode_example(tokenizer, messages: Sequence[dict]) -> Example:
    """A conversation ending with an assistant answer -> ``Example``.

    The prompt part (everything before the last answer) is validated and laid out by the chat
    format; each assistant turn is its text encoded alone plus ``</s>``, all of it scored.
    """
    from ..tokenizer.chat import ChatFormatError, _chat_turns

    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ChatFormatError(f"a training conversation is a non-empty list of messages, got {type(messages).__name__}")
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        raise ChatFormatError(f"message {len(messages) - 1}: a training conversation ends with an assistant "
                              f"answer, got role {last.get('role') if isinstance(last, dict) else last!r}")
    if not isinstance(last.get("content"), str) or not last["content"]:
        raise ChatFormatError(f"message {len(messages) - 1} (role 'assistant'): content must be a non-empty str")
    if not any(isinstance(m, dict) and m.get("role") == "user" for m in messages[:-1]):
        raise ChatFormatError("a training conversation needs a user message before the assistant's answer")
    segments = _chat_turns(messages[:-1]) + [(last["content"], True)]
    ids, scored = [tokenizer.bos_id], [False]
    for text, is_answer in segments:
        piece = tokenizer.encode(text, bos=False, eos=is_answer)
        ids += piece
        scored += [is_answer] * len(piece)
    return Example(ids, scored)


def examples_from_chats(tokenizer, chats, max_len: int) -> list[Example]:
    """The conversations of a chat dataset (lists of ``{"role", "content"}`` messages) that the v1
    format can encode, that end with an answer and that fit ``max_len`` positions, as ``Example``s;
    the others are skipped (v1 has no tool turns, and a conversation must alternate user/assistant)."""
    from ..tokenizer.chat import ChatFormatError

    out = []
    for messages in chats:
        try:
            e = encode_example(tokenizer, [{"role": m["role"], "content": m["content"]} for m in messages])
        except (ChatFormatError, KeyError, TypeError):
            continue
        if len(e) - 1 <= max_len:
            out.append(e)
    return out


def peak_memory(model) -> int:
    """Peak bytes in use so far where ``model`` lives: the GPU's allocator peak, or this process's peak
    resident memory on a CPU."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _check_examples(examples: Sequence[Example], seq_len: Optional[int]) -> None:
    if not examples:
        raise ValueError("no examples: a batch needs at least one conversation")
    for i, e in enumerate(examples):
        if len(e) < 2 or not any(e.scored[1:]):
            raise ValueError(f"example {i} has no scored answer token")
        if seq_len is not None and len(e) - 1 > seq_len:
            raise ValueError(f"example {i} needs {len(e) - 1} positions, more than seq_len = {seq_len}: "
                             "drop or shorten it")


def pad_batch(examples: Sequence[Example], pad_id: int = 0, seq_len: Optional[int] = None) -> Batch:
    """One example per row, right-padded to the longest (or to ``seq_len``) with unscored ``pad_id``."""
    _check_examples(examples, seq_len)
    S = seq_len or max(len(e) - 1 for e in examples)
    tokens = torch.full((len(examples), S), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), S), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        inputs, tgt = e.shifted()
        tokens[row, :len(inputs)] = torch.tensor(inputs)
        targets[row, :len(tgt)] = torch.tensor(tgt)
    return Batch(tokens, targets)


def pack_groups(examples: Sequence[Example], seq_len: int) -> list[list[int]]:
    """Indices of the examples packed into each row of ``seq_len`` positions: in order, a new row
    when the next example does not fit (an example takes len(ids) - 1 positions)."""
    _check_examples(examples, seq_len)
    groups, used = [[]], 0
    for i, e in enumerate(examples):
        if used + len(e) - 1 > seq_len:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += len(e) - 1
    return groups


def packed_batch(examples: Sequence[Example], groups: Sequence[Sequence[int]], seq_len: int,
                 pad_id: int = 0) -> Batch:
    """Rows of packed examples (``pack_groups``): tokens, targets, and segment ids 0, 1, ... per
    example; the padding at the end of a row is a segment of its own and is not scored."""
    tokens = torch.full((len(groups), seq_len), pad_id, dtype=torch.long)
    targets = torch.full((len(groups), seq_len), IGNORE, dtype=torch.long)
    segments = torch.empty((len(groups), seq_len), dtype=torch.long)
    for row, group in enumerate(groups):
        at = 0
        for seg, i in enumerate(group):
            inputs, tgt = examples[i].shifted()
            if at + len(inputs) > seq_len:
                raise ValueError(f"row {row}: its examples need more than seq_len = {seq_len} positions")
            tokens[row, at:at + len(inputs)] = torch.tensor(inputs)
            targets[row, at:at + len(tgt)] = torch.tensor(tgt)
            segments[row, at:at + len(inputs)] = seg
            at += len(inputs)
        segments[row, at:] = len(group)
    return Batch(tokens, targets, segments)


def sft_batches(examples: Sequence[Example], batch_size: int, seq_len: int, packed: bool = True,
                pad_id: int = 0, seed: int = 0) -> Callable[[torch.Generator], Batch]:
    """A batch function for ``fit``: ``batch_size`` random rows of packed examples (shuffled once
    with ``seed``, then packed), or of single padded examples (``packed=False``)."""
    _check_examples(examples, seq_len)
    if packed:
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
        shuffled = [examples[i] for i in order]
        rows = packed_batch(shuffled, pack_groups(shuffled, seq_len), seq_len, pad_id)

        def fn(gen: torch.Generator) -> Batch:
            pick = torch.randint(0, len(rows.tokens), (batch_size,), generator=gen)
            return Batch(rows.tokens[pick], rows.targets[pick], rows.segments[pick])
        return fn

    def fn_padded(gen: torch.Generator) -> Batch:
        pick = torch.randint(0, len(examples), (batch_size,), generator=gen).tolist()
        return pad_batch([examples[i] for i in pick], pad_id)
    return fn_padded


def sft_loss(model, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy (nats) over the scored targets of a batch (packed rows stay apart)."""
    logits = model(batch.tokens, check=False, segments=batch.segments)          # (B, S, vocab), float32
    return F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)


def fit(model, batches: Callable[[torch.Generator], object], steps: int, loss_fn: Callable = sft_loss,
        lr: float = 1e-3, warmup: Optional[int] = None, weight_decay: float = 0.0, clip: Optional[float] = 1.0,
        seed: int = 0, min_lr_ratio: float = 0.1, autocast: Optional[torch.dtype] = None,
        on_step: Optional[Callable[[int, float], None]] = None) -> TrainHistory:
    """Train the parameters of ``model`` that require a gradient for ``steps`` AdamW steps.

    batches(generator) -> a batch (moved to the model's device) for ``loss_fn(model, batch)``, a
    scalar. lr, warmup, min_lr_ratio: the schedule of ``loop.lr_at`` (warmup: default a tenth of the
    steps). autocast: run the forward in
    this dtype (``torch.bfloat16``; ``torch.float16`` also scales the loss with a ``GradScaler``, as
    half precision needs). on_step(step, loss): called after every step (to show progress).
    Returns the loss, learning rate, gradient norm and seconds of every step; the model is left in
    eval mode.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"fit: steps must be an int >= 1, got {steps!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("fit: the model has no parameter that requires a gradient (apply_lora, or unfreeze it)")
    warmup = steps // 10 if warmup is None else warmup
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999))
    scaler = torch.amp.GradScaler(params[0].device.type) if autocast == torch.float16 else None
    gen, history = torch.Generator().manual_seed(seed), TrainHistory()
    model.train()
    for step in range(steps):
        t0, rate = time.perf_counter(), lr_at(step, steps, lr, warmup, min_lr_ratio)
        loss, norm = _fit_step(model, params, opt, scaler, batches(gen), loss_fn, rate, clip, autocast)
        if not math.isfinite(loss) or (scaler is None and not math.isfinite(norm)):
            raise FloatingPointError(f"fit: step {step + 1}: loss {loss}, gradient norm {norm} (learning rate {rate:.3g})")
        history.loss.append(loss)
        history.lr.append(rate)
        history.grad_norm.append(norm)
        history.seconds.append(round((history.seconds[-1] if history.seconds else 0.0) + time.perf_counter() - t0, 3))
        if on_step is not None:
            on_step(step + 1, loss)
    model.eval()
    return history


def _fit_step(model, params, opt, scaler, batch, loss_fn, rate, clip, autocast) -> tuple[float, float]:
    """One optimizer step of ``fit``: (loss, gradient norm before clipping). A step whose gradient is
    not finite is skipped by the scaler (half precision) or raises in ``fit`` before any update."""
    device = params[0].device
    for group in opt.param_groups:
        group["lr"] = rate
    if hasattr(batch, "to"):
        batch = batch.to(device)
    with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        loss = loss_fn(model, batch)
    opt.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.unscale_(opt)
    norm = float(torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else math.inf))
    value = loss.item()
    if scaler:
        scaler.step(opt)
        scaler.update()
    elif math.isfinite(value) and math.isfinite(norm):
        opt.step()
    return value, norm
