"""Training a Mistral model: the next-token objective, perplexity, and a small deterministic loop.

The objective is the one every GPT-style model is trained with. A window of S + 1 tokens from the
token stream gives S predictions: the input is ``window[:, :-1]`` and the target of position i is
``window[:, i + 1]``, the token that follows it (the *one-position shift*). The loss is the mean
cross-entropy in nats, -ln p(target); ``exp(loss)`` is the perplexity. An untrained model that
spreads its probability evenly over the 32,000 ids scores ln 32000 = 10.37 nats (perplexity 32,000).

The loop is the textbook recipe that large models are trained with, shrunk to a CPU:

* AdamW (Loshchilov & Hutter), with weight decay on the matrices only (not on RMSNorm gains);
* a learning rate that warms up linearly, then follows a cosine down to ``min_lr_ratio * lr``;
* gradient clipping by global norm;
* one seed for everything random inside the loop (the batches come from a ``torch.Generator``
  seeded with it), so the same call gives the same losses on the same machine;
* optional checkpoints (model, optimizer, step, generator, history) from which an interrupted run
  resumes and continues with exactly the losses it would have had;
* a non-finite loss or gradient stops the run with an error naming the step, before the weights
  change, so a checkpoint is never overwritten by a diverged model.

The model is built (and its weights initialised) by the caller: ``seeded_model(args, seed)`` does
that reproducibly. A batch function receives the loop's generator and returns ``(tokens, targets)``:
LongTensors of shape (B, S), with ``targets == IGNORE`` (-100) where no prediction is scored.
``TokenStream.batches`` makes such a function from a stream of text tokens.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..config import ModelArgs
from ..model import Transformer
from .checks import (as_count, as_real, check_batch, check_id_tensor, check_ignore_ids, check_schedule,
                     check_train_callables)

__all__ = ["IGNORE", "TrainHistory", "seeded_model", "lr_at", "param_groups", "loss_on", "shift_targets",
           "next_token_loss", "perplexity", "train", "save_training_state", "load_training_state"]

IGNORE = -100   # target value of positions that are not scored (F.cross_entropy's ignore_index)

BatchFn = Callable[[torch.Generator], "tuple[torch.Tensor, torch.Tensor]"]


@dataclass
class TrainHistory:
    """What ``train`` records: at every step the batch loss, the learning rate, the gradient norm
    (before clipping), the tokens seen so far and the seconds spent so far; and, every ``eval_every``
    steps, the validation loss (``val_step``: the number of steps done when it was measured)."""

    loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    grad_norm: list = field(default_factory=list)
    tokens: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    val_step: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)

    def smoothed(self, every: int = 10) -> list:
        """Mean loss of consecutive groups of ``every`` steps (the last group may be shorter)."""
        every = as_count("TrainHistory.smoothed", "every", every)
        return [sum(self.loss[i:i + every]) / len(self.loss[i:i + every]) for i in range(0, len(self.loss), every)]


def seeded_model(args: ModelArgs, seed: int = 0) -> Transformer:
    """A ``Transformer(args)`` whose initial weights depend only on ``seed`` (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Transformer(args)


def lr_at(step: int, steps: int, lr: float, warmup: int, min_lr_ratio: float = 0.1) -> float:
    """Learning rate of ``step`` (0-based): linear warm-up over ``warmup`` steps, then a cosine
    from ``lr`` down to ``min_lr_ratio * lr`` at the last step."""
    check_schedule("lr_at", step, steps, lr, warmup, min_lr_ratio)
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, steps - 1 - warmup)
    progress = min(1.0, (step - warmup) / span)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: matrices (linear layers, embeddings) decay; vectors (RMSNorm gains) do not."""
    as_real("param_groups", "weight_decay", weight_decay, "a number >= 0", lambda v: v >= 0)
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def loss_on(model: Transformer, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats over the scored positions. tokens, targets: (B, S) -> scalar."""
    logits = model(tokens, check=False)                                      # (B, S, vocab), float32
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


def shift_targets(window: torch.Tensor, ignore_ids: tuple = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """The one-position shift: (B, S + 1) tokens -> inputs (B, S) and targets (B, S).

    Position i of the input is asked for ``window[:, i + 1]``. Targets listed in ``ignore_ids``
    (for example ``<s>``, which only ever follows a document's end) are not scored.
    """
    if isinstance(window, torch.Tensor) and (window.dim() != 2 or window.shape[1] < 2):
        raise ValueError(f"shift_targets: window must be (B, S + 1) with S >= 1, got {tuple(window.shape)}")
    check_id_tensor("shift_targets", "window", window, None, dims=(2,), min_len=2)
    ignore_ids = check_ignore_ids("shift_targets", ignore_ids)
    inputs, targets = window[:, :-1], window[:, 1:].clone()
    for i in ignore_ids:
        targets[targets == i] = IGNORE
    return inputs, targets


def next_token_loss(model: Transformer, window: torch.Tensor, ignore_ids: tuple = (),
                    reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy (nats) of predicting each next token of ``window`` (B, S + 1) from the ones before.

    reduction: "mean" -> scalar over the scored positions; "none" -> (B, S), 0 where not scored.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"next_token_loss: reduction must be 'mean' or 'none', got {reduction!r}")
    inputs, targets = shift_targets(window, ignore_ids)
    model.check_tokens(window)                                               # every id, the last target's too
    if reduction == "mean" and not bool((targets != IGNORE).any()):
        raise ValueError("next_token_loss: no target is scored: every one is in ignore_ids")
    logits = model(inputs, check=False)                                      # (B, S, vocab)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                           reduction=reduction)
    return loss if reduction == "mean" else loss.view(targets.shape)


def perplexity(loss_nats: float) -> float:
    """exp(mean cross-entropy in nats): the number of equally likely choices the loss amounts to.

    A loss above ~709.78 nats gives ``inf`` (e**710 exceeds the largest float); a negative, NaN or
    non-numeric loss is refused, since no cross-entropy is one."""
    if isinstance(loss_nats, torch.Tensor) and loss_nats.numel() == 1:
        loss_nats = loss_nats.item()
    if loss_nats == math.inf:
        return math.inf
    loss = as_real("perplexity", "loss_nats", loss_nats, "a loss in nats >= 0", lambda v: v >= 0)
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


# ----------------------------------------------------------------------------- checkpoints
def _digest(state: dict) -> str:
    """SHA-256 of every tensor of a training state (model, optimizer, generator), in a fixed order."""
    h = hashlib.sha256()

    def walk(x, key=""):
        if isinstance(x, torch.Tensor):
            h.update(key.encode())
            h.update(x.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                walk(x[k], f"{key}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{key}/{i}")

    walk({k: state[k] for k in ("model", "optimizer", "generator")})
    return h.hexdigest()


def save_training_state(path: str | Path, model: Transformer, opt: torch.optim.Optimizer, step: int,
                        gen: torch.Generator, history: TrainHistory, settings: dict) -> None:
    """Write everything a resumed run needs, atomically (a temporary file, then a rename).

    Only tensors, numbers, strings, lists and dicts are stored, so ``load_training_state`` reads it
    back with ``torch.load(weights_only=True)``: no code is unpickled. A SHA-256 of the tensors is
    stored with them, so a file damaged on disk is refused instead of resumed from.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
             "generator": gen.get_state(), "history": asdict(history), "settings": settings,
             "args": model.args.to_dict()}
    state["sha256"] = _digest(state)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_training_state(path: str | Path) -> dict:
    """Read a file written by ``save_training_state`` (tensors and plain data only), checking its digest."""
    from ..checkpoint.files import open_regular_file

    path = Path(path)
    with open_regular_file(path, "training checkpoint", ValueError) as f:      # never a pipe or a device
        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path}: not a training checkpoint written by save_training_state "
                             f"({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "step", "generator", "sha256"} <= set(state):
        raise ValueError(f"{path}: not a training checkpoint written by save_training_state (fields missing)")
    if _digest(state) != state["sha256"]:
        raise ValueError(f"{path}: the tensors do not match the checkpoint's SHA-256: the file is damaged")
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{path}: the checkpoint's step is {step!r}, not a count of steps done")
    return state


def _resume(path: Path, model: Transformer, opt, gen: torch.Generator, settings: dict) -> tuple[int, TrainHistory]:
    state = load_training_state(path)
    if state["args"] != model.args.to_dict():
        raise ValueError(f"{path}: the checkpoint is of another model configuration ({state['args']}), "
                         f"not {model.args.to_dict()}")
    saved = state["settings"]
    changed = {k: (saved.get(k, "(absent)"), v) for k, v in settings.items() if saved.get(k, "(absent)") != v}
    changed.update({k: (v, "(absent)") for k, v in saved.items() if k not in settings})
    if changed:
        raise ValueError(f"{path}: the checkpoint was written by a run with other settings "
                         f"(saved, now): {changed}; resume with the same settings or start afresh")
    if state["step"] > settings["steps"]:
        raise ValueError(f"{path}: the checkpoint is at step {state['step']}, beyond this run's {settings['steps']} steps")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    return int(state["step"]), TrainHistory(**state["history"])


# ----------------------------------------------------------------------------- checking the arguments
# train()'s parameters that do not change what is computed; every other one is a setting that a
# resumed run must share with the run that wrote the checkpoint (so a new parameter is checked too).
RUN_ONLY = ("model", "batches", "progress", "desc", "eval_fn", "eval_every", "checkpoint", "checkpoint_every",
            "resume", "stop_after", "compile")


def _number(name: str, value, low: float, high: float = math.inf, low_ok: bool = True, high_ok: bool = False,
            integer: bool = False) -> None:
    """ValueError naming ``name`` unless ``value`` is a finite number (an int if ``integer``) in range."""
    kind = "an int" if integer else "a number"
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if (ok and math.isfinite(value) and (low <= value if low_ok else low < value)
            and (value <= high if high_ok else value < high)):
        return
    bounds = f"{'>=' if low_ok else '>'} {low:g}" + ("" if high == math.inf else f" and {'<=' if high_ok else '<'} {high:g}")
    raise ValueError(f"train: {name} must be {kind} {bounds}, got {value!r}")


def check_train_args(s: dict) -> None:
    """Raise ValueError naming the argument for any value ``train`` cannot run with as asked."""
    _number("steps", s["steps"], 1, integer=True)
    _number("warmup", s["warmup"], 0, s["steps"], integer=True)
    _number("lr", s["lr"], 0, low_ok=False)
    _number("weight_decay", s["weight_decay"], 0)
    if s["clip"] is not None:
        _number("clip", s["clip"], 0, low_ok=False)
    _number("min_lr_ratio", s["min_lr_ratio"], 0, 1, high_ok=True)
    _number("seed", s["seed"], 0, integer=True)
    betas = s["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2):
        raise ValueError(f"train: betas must be two numbers in [0, 1), got {betas!r}")
    for b in betas:
        _number("each of betas", b, 0, 1)


def _check_run_args(model, batches, eval_fn, eval_every, checkpoint, checkpoint_every, resume, stop_after) -> None:
    check_train_callables(model, batches, eval_fn)
    _number("eval_every", eval_every, 0, integer=True)
    _number("checkpoint_every", checkpoint_every, 0, integer=True)
    if stop_after is not None:
        _number("stop_after", stop_after, 1, integer=True)
    if eval_every and eval_fn is None:
        raise ValueError("train: eval_every needs an eval_fn")
    if resume and checkpoint is None:
        raise ValueError("train: resume=True needs a checkpoint path")
    if checkpoint is not None and Path(checkpoint).is_dir():
        raise ValueError(f"train: checkpoint {checkpoint} is a directory; give the path of a file, e.g. "
                         f"{Path(checkpoint) / 'state.pt'}")


# ----------------------------------------------------------------------------- the loop
def _step(model, opt, batches, gen, rate: float, clip, autocast: bool, loss_fn) -> tuple[float, float, int]:
    """One optimizer step; (loss, gradient norm before clipping, tokens). Raises FloatingPointError
    before changing the weights when the loss or the gradient is not finite."""
    for group in opt.param_groups:
        group["lr"] = rate
    batch = batches(gen)
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        model.check_tokens(batch[0])                     # an id beyond the vocabulary, named
    tokens, targets = check_batch(batch, model.args.vocab_size, IGNORE)
    device = tokens.device.type
    with torch.autocast("cpu" if device == "cpu" else device, dtype=torch.bfloat16, enabled=autocast):
        loss = loss_fn(model, tokens, targets)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip is not None else float("inf"))
    value, norm = loss.item(), float(norm)
    if not (math.isfinite(value) and math.isfinite(norm)):
        what = f"loss {value}" if not math.isfinite(value) else f"gradient norm {norm}"
        raise FloatingPointError(f"the {what} is not finite")
    opt.step()
    return value, norm, tokens.numel()


def _record(history: TrainHistory, loss: float, rate: float, norm: float, tokens: int, seconds: float) -> None:
    """Append one step to the history (tokens and seconds accumulate over the whole run)."""
    history.loss.append(loss)
    history.lr.append(rate)
    history.grad_norm.append(norm)
    history.tokens.append((history.tokens[-1] if history.tokens else 0) + tokens)
    history.seconds.append(round((history.seconds[-1] if history.seconds else 0.0) + seconds, 3))


def _evaluate(model: Transformer, eval_fn, history: TrainHistory, done: int) -> None:
    model.eval()
    with torch.no_grad():
        history.val_loss.append(float(eval_fn(model)))
    history.val_step.append(done)
    model.train()


def train(model: Transformer, batches: BatchFn, steps: int, lr: float = 3e-3, warmup: int = 50,
          weight_decay: float = 0.01, clip: Optional[float] = 1.0, seed: int = 0,
          min_lr_ratio: float = 0.1, betas: tuple = (0.9, 0.98), progress: bool = True,
          desc: str = "train", eval_fn: Optional[Callable[[Transformer], float]] = None,
          eval_every: int = 0, checkpoint: Optional[str | Path] = None, checkpoint_every: int = 0,
          resume: bool = False, autocast: bool = False, stop_after: Optional[int] = None,
          compile: bool = False) -> TrainHistory:
    """Train ``model`` in place for ``steps`` AdamW steps; returns the ``TrainHistory``.

    batches: ``batches(generator) -> (tokens, targets)``, both (B, S) LongTensors; the generator is
        the loop's own, seeded with ``seed``, so the data sequence is fixed by the seed.
    lr, warmup, min_lr_ratio: peak learning rate and the schedule of ``lr_at``.
    clip: maximum global gradient norm (None: no clipping).
    eval_fn, eval_every: ``eval_fn(model)`` (a validation loss) is recorded every ``eval_every``
        steps and after the last one; the model is in eval mode meanwhile.
    checkpoint, checkpoint_every: write the training state to this file every ``checkpoint_every``
        steps (0: never in between) and at the end; with ``resume=True`` an existing file is read
        first and the run goes on from its step (same settings required), giving the losses an
        uninterrupted run would give. A non-finite loss or gradient raises FloatingPointError naming
        the step before anything is written, so the last checkpoint stays the last good state.
    autocast: run the forward pass under bfloat16 autocast (weights and optimizer stay float32).
    compile: run the forward pass and the loss through ``torch.compile``.
    stop_after: end after this many steps in total (an interruption); the schedule follows ``steps``.
    progress: show a tqdm bar with the loss and tokens/s (pass False in notebooks and tests).
    """
    settings = {k: v for k, v in locals().items() if k not in RUN_ONLY}   # what a resume must match
    settings["betas"] = list(betas)
    check_train_args(settings)
    _check_run_args(model, batches, eval_fn, eval_every, checkpoint, checkpoint_every, resume, stop_after)
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas))
    history, start = TrainHistory(), 0
    if resume and Path(checkpoint).exists():
        start, history = _resume(Path(checkpoint), model, opt, gen, settings)
    end = steps if stop_after is None else min(steps, stop_after)
    loss_fn = torch.compile(loss_on) if compile else loss_on
    model.train()
    bar = tqdm(range(start, end), desc=desc, disable=not progress, initial=start, total=steps)
    for step in bar:
        t0 = time.perf_counter()
        rate = lr_at(step, steps, lr, warmup, min_lr_ratio)
        try:
            loss, norm, n = _step(model, opt, batches, gen, rate, clip, autocast, loss_fn)
        except FloatingPointError as e:
            kept = f"; the checkpoint {checkpoint} keeps the last good state" if checkpoint else ""
            raise FloatingPointError(f"train: step {step + 1}: {e} (learning rate {rate:.3g}); the weights "
                                     f"were not updated{kept}") from None
        done, dt = step + 1, time.perf_counter() - t0
        _record(history, loss, rate, norm, n, dt)
        if eval_fn is not None and eval_every and (done % eval_every == 0 or done == steps):
            _evaluate(model, eval_fn, history, done)
        if checkpoint is not None and ((checkpoint_every and done % checkpoint_every == 0) or done == end):
            save_training_state(checkpoint, model, opt, done, gen, history, settings)
        if progress:
            val = f"{history.val_loss[-1]:.3f}" if history.val_loss else "-"
            bar.set_postfix({"loss": f"{loss:.3f}", "tok/s": f"{n / dt:,.0f}", "val": val}, refresh=False)
    model.eval()
    return history
