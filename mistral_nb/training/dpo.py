"""Direct preference optimisation (DPO, Rafailov et al. 2023): learn from pairs of answers.

SFT shows the model good answers. A preference pair shows it, for one prompt x, an answer y_w that
is preferred and one y_l that is not. RLHF would fit a reward model to such pairs and then run
reinforcement learning against it; DPO shows that the optimal policy of that problem (with a KL
penalty of strength beta keeping it near a reference model pi_ref) can be trained directly::

    loss = -log sigmoid( beta * [ (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x)) ] )

where log pi(y|x) is the summed log-probability of the answer's tokens (the prompt is not scored).
``beta * (log pi - log pi_ref)`` is the *implicit reward* of an answer; the loss asks the chosen
answer's reward to exceed the rejected one's. The reference is the model DPO starts from (after
SFT), frozen: with LoRA it is the same model with its adapters switched off
(``lora.adapters_disabled``), so no second copy of the weights is needed.

This is trl's ``DPOTrainer`` with its default ``loss_type="sigmoid"`` (``_compute_loss``), to
float rounding on identical inputs (``tests/test_dpo.py``). A batch is laid out as trl lays it:
the B chosen rows, then the B rejected rows, each ``prompt + answer`` right-padded.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..lora import adapters_disabled
from .loop import IGNORE
from .sft import Batch, Example, pad_batch

__all__ = ["Pair", "encode_pair", "pair_batch", "dpo_batches", "sequence_logps", "dpo_loss", "dpo_objective"]


@dataclass
class Pair:
    """A preference pair: the prompt's ids (``<s>[INST] ... [/INST]``) and two answers' ids, each
    ending with ``</s>``: ``chosen`` (preferred) and ``rejected``."""
    prompt: list
    chosen: list
    rejected: list

    def examples(self) -> tuple[Example, Example]:
        """The two sequences prompt + answer, only the answer scored."""
        return tuple(Example(self.prompt + a, [False] * len(self.prompt) + [True] * len(a))
                     for a in (self.chosen, self.rejected))


def encode_pair(tokenizer, messages: Sequence[dict], chosen: str, rejected: str) -> Pair:
    """A pair from a conversation that ends with a user message and two answers to it (each encoded
    as an assistant turn: its text, then ``</s>``)."""
    if chosen == rejected:
        raise ValueError(f"a preference pair needs two different answers, got {chosen!r} twice")
    return Pair(tokenizer.encode_chat(messages), tokenizer.encode(chosen, bos=False, eos=True),
                tokenizer.encode(rejected, bos=False, eos=True))


def pair_batch(pairs: Sequence[Pair], pad_id: int = 0) -> Batch:
    """2B right-padded rows: the chosen sequences of the B pairs, then their rejected ones."""
    chosen, rejected = zip(*(p.examples() for p in pairs))
    return pad_batch(list(chosen) + list(rejected), pad_id)


def dpo_batches(pairs: Sequence[Pair], batch_size: int, pad_id: int = 0) -> Callable[[torch.Generator], Batch]:
    """A batch function for ``sft.fit``: ``batch_size`` random pairs per step."""
    if not pairs:
        raise ValueError("dpo_batches: no pairs")

    def fn(gen: torch.Generator) -> Batch:
        pick = torch.randint(0, len(pairs), (batch_size,), generator=gen).tolist()
        return pair_batch([pairs[i] for i in pick], pad_id)
    return fn


def sequence_logps(model, batch: Batch) -> torch.Tensor:
    """(B,) float32: each row's summed log-probability of its scored targets (its answer)."""
    logits = model(batch.tokens, check=False, segments=batch.segments)            # (B, S, vocab) float32
    scored = batch.targets != IGNORE
    logp = torch.gather(logits.log_softmax(-1), 2, batch.targets.clamp(min=0)[..., None])[..., 0]   # (B, S)
    return (logp * scored).sum(-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO's sigmoid loss from the summed log-probabilities (each (B,)) of the policy and the reference.

    Returns (mean loss, chosen rewards, rejected rewards), the rewards ``beta * (log pi - log pi_ref)``.
    """
    if not beta > 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta!r}")
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)
    return losses.mean(), chosen_rewards.detach(), rejected_rewards.detach()


def dpo_objective(beta: float = 0.1, reference: Optional[torch.nn.Module] = None) -> Callable:
    """A ``loss_fn(model, batch)`` for ``sft.fit``: DPO against ``reference`` (a frozen model), or,
    when None, against ``model`` itself with its LoRA adapters switched off."""
    def loss_fn(model, batch: Batch) -> torch.Tensor:
        logps = sequence_logps(model, batch)
        with torch.no_grad(), (contextlib.nullcontext() if reference is not None else adapters_disabled(model)):
            ref = sequence_logps(reference if reference is not None else model, batch)
        pc, pr = logps.chunk(2)
        rc, rr = ref.chunk(2)
        return dpo_loss(pc, pr, rc, rr, beta)[0]
    return loss_fn
