"""Round 3 of the bad-input review: wrong answers without a word, crashes, lost data, hangs.

Each test fails on the code before its fix (the message each bad input now gets is in the assert)."""

from __future__ import annotations

import copy
import math
import os
import threading

import pytest
import torch

from helpers import random_model, tiny_args
from mistral_nb import Transformer, generate, load_model, save_checkpoint
from mistral_nb.speed.int8 import INT8_KERNEL_MAX_ROWS, Int8Linear, quantize_int8, quantize_model
from mistral_nb.training.loop import load_training_state, seeded_model, train


# ---------------------------------------------------------------- int8 after generate, in every path
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prompt_len", [3, INT8_KERNEL_MAX_ROWS[torch.bfloat16] + 5])   # kernel rows, then cast
def test_int8_model_runs_forward_and_backward_after_generate(dtype, prompt_len):
    args = tiny_args()
    model = quantize_model(random_model(args, seed=1).to(dtype))
    prompt = list(range(1, prompt_len + 1))
    generate(model, [prompt], max_new_tokens=3)              # inference mode: the cast scratch is made here
    tokens = torch.tensor([prompt])
    with torch.no_grad():
        model(tokens)                                        # was: "Inplace update to inference tensor"
    emb = model.tok_embeddings.weight
    emb.requires_grad_(True)
    model(tokens).float().sum().backward()                   # gradients through the int8 layers
    assert emb.grad is not None and torch.isfinite(emb.grad).all()


# ---------------------------------------------------------------- int8 and the tensor-parallel split
def _int8_tp_logits(comm, args_dict, tokens):
    from mistral_nb import ModelArgs
    from mistral_nb.parallel import random_model as rm, shard_model

    tp = quantize_model(shard_model(rm(ModelArgs(**args_dict), 0), comm))
    return tp(torch.tensor(tokens))


def test_int8_on_a_tensor_parallel_model_keeps_the_all_reduces():
    from mistral_nb.parallel import launch

    args = tiny_args()
    tokens = [[1, 5, 9, 20, 7, 3, 44, 12, 8, 100, 2, 17]]
    full = random_model(args, 0)
    ref = full(torch.tensor(tokens))
    q_ref = quantize_model(copy.deepcopy(full))(torch.tensor(tokens))
    (out0, out1), _ = launch(_int8_tp_logits, 2, (args.to_dict(), tokens), mode="threads", timeout=120)
    assert torch.equal(out0, out1)
    err_tp, err_single = (out0 - ref).abs().max().item(), (q_ref - ref).abs().max().item()
    assert err_tp < 3 * err_single + 1e-3, (err_tp, err_single)       # int8 rounding, not a lost all-reduce
    scale = ref.abs().max().item()
    assert err_tp < 0.05 * scale


def test_weight_formats_refuse_linear_subclasses_by_name():
    class Reduced(torch.nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    model = torch.nn.Sequential(torch.nn.Linear(8, 8, bias=False), Reduced(8, 8, bias=False))
    with pytest.raises(TypeError, match="1 is a Reduced, a subclass of nn.Linear"):
        quantize_model(model)


def test_skip_must_be_a_tuple_of_names():
    model = random_model(tiny_args(), 0)
    with pytest.raises(TypeError, match=r"skip must be a tuple of module names, e.g. \('output',\)"):
        quantize_model(model, skip="output")
    with pytest.raises(TypeError, match="skip must hold module names"):
        quantize_model(model, skip=(3,))
    q = quantize_model(model, skip=("output",))
    assert type(q.output) is torch.nn.Linear and isinstance(q.layers[0].attention.wq, Int8Linear)


def test_quantize_int8_chunk_rows_and_empty_rows():
    with pytest.raises(ValueError, match="chunk_rows must be an int >= 1, got -1"):
        quantize_int8(torch.randn(4, 4), chunk_rows=-1)
    q, s = quantize_int8(torch.randn(4, 0))                  # was refused (amax of an empty row)
    assert q.shape == (4, 0) and torch.equal(s, torch.ones(4))


# ---------------------------------------------------------------- training: NaN, settings, checkpoints
class _Batches:
    """A batch function that turns NaN at step ``bad`` (a poisoned batch of embeddings)."""

    def __init__(self, vocab):
        self.vocab, self.calls = vocab, 0

    def __call__(self, gen):
        self.calls += 1
        x = torch.randint(0, self.vocab, (2, 9), generator=gen)
        return x[:, :-1], x[:, 1:]


def test_a_nan_step_stops_training_and_keeps_the_good_checkpoint(tmp_path):
    args = tiny_args(n_layers=1)
    model = seeded_model(args, 0)
    ckpt = tmp_path / "state.pt"
    plain = _Batches(args.vocab_size)

    def diverging(gen):                                      # the weights blow up before the 4th step
        if plain.calls == 3:
            with torch.no_grad():
                model.tok_embeddings.weight.fill_(float("nan"))
        return plain(gen)

    with pytest.raises(FloatingPointError, match=r"train: step 4: the loss nan is not finite \(learning rate .*\); "
                                                 r"the weights were not updated; the checkpoint .* keeps the last good state"):
        train(model, diverging, steps=6, warmup=1, progress=False, checkpoint=ckpt, checkpoint_every=2)
    state = load_training_state(ckpt)
    assert state["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


@pytest.mark.parametrize("kwargs, match", [
    (dict(clip=-1.0), "clip must be a number > 0, got -1.0"),
    (dict(min_lr_ratio=-0.1), r"min_lr_ratio must be a number >= 0 and <= 1, got -0.1"),
    (dict(lr=math.inf), "lr must be a number > 0, got inf"),
    (dict(weight_decay=-0.01), "weight_decay must be a number >= 0, got -0.01"),
    (dict(betas=(0.9, 1.5)), r"each of betas must be a number >= 0 and < 1, got 1.5"),
    (dict(steps=2.5), "steps must be an int >= 1, got 2.5"),
    (dict(eval_every=3), "eval_every needs an eval_fn"),
    (dict(checkpoint_every=-1), "checkpoint_every must be an int >= 0"),
])
def test_bad_training_settings_are_refused_before_any_step(kwargs, match):
    batches = _Batches(300)
    opts = dict(steps=4, warmup=1, progress=False)
    opts.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train(seeded_model(tiny_args(n_layers=1), 0), batches, **opts)
    assert batches.calls == 0


def test_checkpoint_path_that_is_a_directory_fails_before_the_steps(tmp_path):
    batches = _Batches(300)
    with pytest.raises(ValueError, match="is a directory; give the path of a file"):
        train(seeded_model(tiny_args(n_layers=1), 0), batches, steps=3, warmup=1, progress=False, checkpoint=tmp_path)
    assert batches.calls == 0


def test_checkpoint_every_zero_still_writes_at_the_end(tmp_path):
    train(seeded_model(tiny_args(n_layers=1), 0), _Batches(300), steps=3, warmup=1, progress=False,
          checkpoint=tmp_path / "s.pt")
    assert load_training_state(tmp_path / "s.pt")["step"] == 3


def test_resume_compares_every_setting_of_the_call(tmp_path):
    kw = dict(steps=4, warmup=1, progress=False, checkpoint=tmp_path / "s.pt", stop_after=2)
    train(seeded_model(tiny_args(n_layers=1), 0), _Batches(300), **kw)
    with pytest.raises(ValueError, match=r"other settings .*'autocast': \(False, True\)"):
        train(seeded_model(tiny_args(n_layers=1), 0), _Batches(300), **kw, resume=True, autocast=True)


def test_damaged_or_odd_training_states_are_refused(tmp_path):
    path = tmp_path / "s.pt"
    train(seeded_model(tiny_args(n_layers=1), 0), _Batches(300), steps=2, warmup=1, progress=False, checkpoint=path)
    state = torch.load(path, weights_only=True)
    state["model"]["norm.weight"][3] += 1.0                     # a flipped value inside a saved tensor
    torch.save(state, path)
    with pytest.raises(ValueError, match="do not match the checkpoint's SHA-256: the file is damaged"):
        load_training_state(path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is not a regular file"):
        load_training_state(fifo)                               # was: blocked forever


def test_token_ids_beyond_the_vocabulary_are_named_in_training():
    def batches(gen):
        x = torch.full((2, 8), 400)
        return x, x
    with pytest.raises(ValueError, match=r"token id 400 at \(batch, position\) \(0, 0\) is outside \[0, 300\)"):
        train(seeded_model(tiny_args(n_layers=1), 0), batches, steps=2, warmup=1, progress=False)


# ---------------------------------------------------------------- generate
def test_generate_on_a_nan_model_raises_instead_of_returning_zeros():
    model = random_model(tiny_args(), 0)
    with torch.no_grad():
        model.output.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"logits are not finite \(NaN or inf\) for prompt row\(s\) \[0\]"):
        generate(model, [[1, 2, 3]], max_new_tokens=4)


def test_a_model_without_a_window_grows_its_cache_as_it_generates():
    args = tiny_args(sliding_window=None)
    model = random_model(args, 0)
    prompt = [1, 2, 3]
    sizes = []
    real_grow = __import__("mistral_nb").RollingBufferCache.grow

    def spy(self, window):
        sizes.append(window)
        return real_grow(self, window)

    cache_cls = __import__("mistral_nb").RollingBufferCache
    cache_cls.grow = spy
    try:
        out = generate(model, [prompt], max_new_tokens=600, progress=False)
    finally:
        cache_cls.grow = real_grow
    assert sizes == [512, 602]                               # 256 slots first, then doubled, never beyond
    ids = prompt + out[0][:-1]                               # the same tokens as a full recomputation
    full = model(torch.tensor([ids]))[0].argmax(-1)
    assert full[len(prompt) - 1:].tolist() == out[0]


def test_launch_auto_runs_an_unpicklable_function_as_threads():
    from mistral_nb.parallel import launch

    lock = threading.Lock()

    def local(comm):                                     # a local function: it cannot be pickled
        with lock:
            return comm.rank

    assert launch(local, 2, mode="auto", timeout=30) == ([0, 1], "threads")
    with pytest.raises(ValueError, match="mode='processes' needs fn and its arguments to be picklable"):
        launch(local, 2, mode="processes", timeout=30)


def test_compiled_generation_without_a_window_compiles_once_for_many_lengths():
    """The cache of a window-less model comes in powers of two, so a compiled decode step meets the same
    shapes again (the cache used to be sized to each call's length: a recompilation per call)."""
    from torch._dynamo.utils import counters

    model = random_model(tiny_args(sliding_window=None, n_layers=1), 0)
    first = generate(model, [[1, 2, 3]], max_new_tokens=5, compile=True)
    graphs = counters["stats"]["unique_graphs"]
    generate(model, [[1, 2, 3, 4, 5, 6]], max_new_tokens=9, compile=True)
    generate(model, [[7] * 40], max_new_tokens=20, compile=True)
    assert counters["stats"]["unique_graphs"] == graphs
    assert first == generate(model, [[1, 2, 3]], max_new_tokens=5)
