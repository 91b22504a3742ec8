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


# ================================================================ the remaining items of issue 24
# ---------------------------------------------------------------- servers that hang, trickle or cut short
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import http.server  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from mistral_nb import load_pretrained  # noqa: E402
from mistral_nb.book import results  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def _server(behaviour):
    """A real HTTP server on 127.0.0.1 whose GET handler is ``behaviour(handler, stopped)``; yields its URL.
    ``stopped`` is set at the end, so a handler that stalls or trickles ends with the test."""
    stopped = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args):
            pass

        def do_GET(self):
            behaviour(self, stopped)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stopped.set()
        server.shutdown()
        server.server_close()


def _stall(handler, stopped):                     # accepts, reads the request, never answers
    stopped.wait(60)


def _trickle(handler, stopped):                   # a valid answer, one byte every half second
    handler.send_response(200)
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    for _ in range(1000):
        if stopped.wait(0.5):
            return
        handler.wfile.write(b" ")
        handler.wfile.flush()


@pytest.fixture
def elsewhere(monkeypatch, tmp_path):
    """No checkout in reach, an empty cache: recorded files must come from $MISTRAL_NB_RAW_BASE."""
    monkeypatch.setattr(results, "repository_root", lambda start=None: None)
    monkeypatch.setenv("MISTRAL_NB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("behaviour", [_stall, _trickle], ids=["stall", "trickle"])
@pytest.mark.parametrize("reader", ["load_recorded", "recorded_path"])
def test_recorded_downloads_have_a_total_deadline(elsewhere, monkeypatch, behaviour, reader):
    with _server(behaviour) as url:
        monkeypatch.setenv(results.RAW_BASE_ENV, url)
        t0 = time.monotonic()
        with pytest.raises(FileNotFoundError, match=r"benchmarks/results/cpu_bandwidth.json.*failed \(TimeoutError: "
                                                    r"no complete answer within 2 s \([\d,]+ bytes received\)\)"):
            getattr(results, reader)("benchmarks/results/cpu_bandwidth.json", timeout=2)   # was: never returned
        assert time.monotonic() - t0 < 6
    assert not elsewhere.exists() or [p.name for p in elsewhere.rglob("*") if p.is_file()] == []   # no .part left


def _cut_short(body: bytes, announce: bool):
    def behaviour(handler, stopped):
        handler.send_response(200)
        if announce:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:len(body) // 2])           # then the connection closes
    return behaviour


def test_a_truncated_download_is_never_cached(elsewhere, monkeypatch):
    name = "benchmarks/results/cpu_bandwidth.json"            # listed in the package's manifest
    body = (ROOT / name).read_bytes()
    with _server(_cut_short(body, announce=False)) as url:    # no Content-Length: only the manifest can tell
        monkeypatch.setenv(results.RAW_BASE_ENV, url)
        with pytest.raises(FileNotFoundError, match=rf"{name}.*ValueError: the download is {len(body) // 2:,} bytes "
                                                    rf"with SHA-256 .*manifest lists {len(body):,} bytes"):
            results.recorded_path(name)                       # was: cached, and served from then on
        with pytest.raises(FileNotFoundError, match="truncated or changed file"):
            results.load_recorded(name)
    assert not (results.cache_dir() / name).exists()
    other = "experiments/results/not_in_the_manifest.json"
    with _server(_cut_short(b'{"a": 1, "b": 2}', announce=True)) as url:
        monkeypatch.setenv(results.RAW_BASE_ENV, url)
        with pytest.raises(FileNotFoundError, match=r"received 8 of the 16 bytes the server announced"):
            results.recorded_path(other)
    assert not (results.cache_dir() / other).exists()


def test_a_truncated_file_already_in_the_cache_is_fetched_again(elsewhere, monkeypatch, tmp_path):
    name = "benchmarks/results/cpu_bandwidth.json"
    body = (ROOT / name).read_bytes()

    def whole(handler, stopped):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with _server(whole) as url:
        monkeypatch.setenv(results.RAW_BASE_ENV, url)
        cached = results.cache_dir() / name
        cached.parent.mkdir(parents=True)
        cached.write_bytes(body[:10])                         # what an older version left behind
        assert results.recorded_path(name) == cached and cached.read_bytes() == body
        assert results.load_recorded(name) == json.loads(body)


def _committed(root: Path) -> set:
    """The recorded files git tracks (all of them where this is no git checkout)."""
    import subprocess

    on_disk = set(results.manifest_of(root))
    try:
        out = subprocess.run(["git", "ls-files", *results.RECORDED_DIRS], cwd=root, capture_output=True, text=True,
                             timeout=60, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return on_disk
    return on_disk & set(out)


def test_the_manifest_lists_every_recorded_file_as_it_is():
    """Regenerate it with ``python scripts/recorded_manifest.py`` after changing a recorded file. (A file
    not yet committed may be missing from it; every listed one must match, every committed one be listed.)"""
    listed, actual = results.recorded_manifest(), results.manifest_of(ROOT)
    stale = {name for name, entry in listed.items() if actual.get(name) != entry}
    missing = _committed(ROOT) - set(listed)
    assert not stale and not missing, f"run python scripts/recorded_manifest.py: stale {sorted(stale)}, missing {sorted(missing)}"
    assert "experiments/results/english_swa/consolidated.safetensors" in listed
    entry = listed["benchmarks/results/cpu_bandwidth.json"]
    data = (ROOT / "benchmarks/results/cpu_bandwidth.json").read_bytes()
    assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, None, "2"])
def test_recorded_downloads_refuse_a_timeout_that_is_no_deadline(timeout):
    with pytest.raises(ValueError, match=r"load_recorded: timeout must be a number of seconds > 0"):
        results.load_recorded("benchmarks/results/x.json", timeout=timeout)


@pytest.mark.parametrize("content, reason", [(b"{ truncated", "Expecting property name"),
                                             (b"\xff\xfe{}", "not UTF-8 text"),
                                             (b'{"a": 1, "a": 2}', "the key 'a' appears twice")])
def test_a_recorded_result_that_is_not_json_is_named(tmp_path, content, reason):
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    bad = tmp_path / "benchmarks" / "results" / "bad.json"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=rf"bad.json: not a recorded result \(not valid JSON\) \({reason}"):
        results.load_recorded("benchmarks/results/bad.json", start=tmp_path)      # was: a bare JSONDecodeError


# ---------------------------------------------------------------- the Hub: a total deadline, no empty id
def test_load_pretrained_gives_up_on_a_hub_that_never_answers(monkeypatch, tmp_path):
    from huggingface_hub import constants

    with _server(_stall) as url:
        monkeypatch.setattr(constants, "ENDPOINT", url)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match=rf"someone/tiny-mistral from {url}: no complete answer within 2 s; "
                                               r"nothing of it is in huggingface_hub's cache"):
            load_pretrained("someone/tiny-mistral", timeout=2, local_dir=tmp_path / "dl", verbose=False)
        assert time.monotonic() - t0 < 8                     # was: never returned (repo_info has no timeout)


def test_load_pretrained_uses_the_cached_copy_when_the_hub_is_late(monkeypatch, tmp_path, capsys):
    import huggingface_hub

    model = random_model(tiny_args(n_layers=1), 0)
    path = save_checkpoint(model, tmp_path / "cached", layout="hf")

    def snapshot(**kwargs):
        if kwargs.get("local_files_only"):
            return str(path)
        time.sleep(30)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    loaded = load_pretrained("someone/tiny-mistral", timeout=1, download_timeout=1, verbose=False, progress=False,
                             dtype=torch.float32, quantize=None)
    assert torch.equal(loaded.output.weight, model.output.weight)
    assert "no complete answer within 1 s; using the copy in huggingface_hub's cache" in capsys.readouterr().out


@pytest.mark.parametrize("repo_id", ["", "   "])
def test_an_empty_repo_id_is_not_the_current_directory(repo_id):
    with pytest.raises(ValueError, match=r"repo_id is empty .*'\.' for the current one"):
        load_pretrained(repo_id)                              # was: loaded the working directory


@pytest.mark.parametrize("kwargs", [dict(timeout=0), dict(timeout=None), dict(download_timeout=-5)])
def test_load_pretrained_refuses_a_deadline_that_is_none(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=rf"load_pretrained: {name} must be a number of seconds > 0"):
        load_pretrained("someone/tiny-mistral", **kwargs)


# ---------------------------------------------------------------- every public function's bad inputs
# (case, call, exception, message): each call used to give a wrong number without a word, a NaN, a
# raw error from deep inside (IndexError, ZeroDivisionError, range(), AttributeError), or to act on
# the working directory. ``was`` in the comment says what it did before.
from mistral_nb import ModelArgs, Tokenizer  # noqa: E402
from mistral_nb.book.exercises import check, form_of  # noqa: E402
from mistral_nb.costs import dtype_bytes, keys_seen, prefill_cost, sequences_that_fit  # noqa: E402
from mistral_nb.evals import heads  # noqa: E402
from mistral_nb.evals.language import cached_logits, loss_by_context, loss_by_position, mean_loss, per_token_losses  # noqa: E402,E501
from mistral_nb.evals.ngram import BigramLM, UnigramLM, uniform_loss  # noqa: E402
from mistral_nb.speed.flash import flash_attention  # noqa: E402
from mistral_nb.speed.formats import formats_in, replace_linears  # noqa: E402
from mistral_nb.tokenizer import BPETokenizer  # noqa: E402
from mistral_nb.training.corpus import TokenStream  # noqa: E402
from mistral_nb.training.loop import TrainHistory, lr_at, next_token_loss, param_groups, perplexity, shift_targets  # noqa: E402,E501
from mistral_nb.training.tasks import KeyRecall, accuracy_by_distance, key_influence_by_distance  # noqa: E402

_CACHE: dict = {}


def _m():
    """One small model for the whole table (vocabulary 300)."""
    if "m" not in _CACHE:
        _CACHE["m"] = random_model(tiny_args(n_layers=1), 0)
    return _CACHE["m"]


def _tok(kind="sp"):
    if kind not in _CACHE:
        _CACHE[kind] = Tokenizer.mistral_v1() if kind == "sp" else BPETokenizer.mistral_v1()
    return _CACHE[kind]


def _maps(S=5):
    return torch.softmax(torch.randn(2, 1, 3, S, S, generator=torch.Generator().manual_seed(0)), -1)


def _ids(*v):
    return torch.tensor(v)


W = torch.randint(0, 300, (3, 9), generator=torch.Generator().manual_seed(0))
STREAM = TokenStream(torch.arange(100))
QUERY_TASK = KeyRecall(n_keys=4, n_noise=4, seq_len=10, query=True)


def _train(batches, **kw):
    return train(seeded_model(tiny_args(n_layers=1), 0), batches, steps=2, warmup=0, progress=False, **kw)


def _batch(tokens, targets):
    return lambda gen: (tokens, targets)


BAD_INPUTS = [
    # n-gram baselines (was: ids beyond the vocabulary counted into other ids' bins, probabilities summing to 1.46)
    ("unigram fit id >= vocab", lambda: UnigramLM(4).fit(_ids(0, 1, 5, 6, 2)), ValueError,
     r"UnigramLM.fit: ids hold 6 at position 3, outside the vocabulary \[0, 4\)"),
    ("bigram fit id >= vocab", lambda: BigramLM(4).fit(_ids(0, 1, 5, 2)), ValueError,
     r"BigramLM.fit: ids hold 5 at position 2, outside the vocabulary \[0, 4\)"),
    ("bigram loss negative id", lambda: BigramLM(4).fit(_ids(0, 1, 2, 3)).loss(_ids(1, -1, 2)), ValueError,
     r"BigramLM.loss: ids hold -1 at position 1, outside the vocabulary"),
    ("unigram fit float ids", lambda: UnigramLM(4).fit(torch.tensor([1.7, 2.2])), TypeError,  # was: truncated to ints
     r"UnigramLM.fit: ids must hold integer token ids, got dtype torch.float32"),
    ("unigram loss, every target ignored", lambda: UnigramLM(4, ignore_ids=(1,)).fit(_ids(0, 2, 3)).loss(_ids(1, 1)),
     ValueError, r"UnigramLM.loss: every target of ids is one of ignore_ids \(1,\): no target is left"),  # was: nan
    ("bigram not fitted", lambda: BigramLM(4).probs(1), ValueError, r"BigramLM.probs: the model has not been fitted yet"),
    ("bigram probs prev -1", lambda: BigramLM(4).fit(_ids(0, 1, 2, 3)).probs(-1), ValueError,   # was: row of id -1 % V
     r"BigramLM.probs: prev must be an int in \[0, 3\], got -1"),
    ("bigram discount str", lambda: BigramLM(4, discount="0.5"), TypeError, r"BigramLM: discount must be a number, got '0.5'"),
    ("unigram vocab 0", lambda: UnigramLM(0), ValueError, r"UnigramLM: vocab_size must be an int in \[1, \.\.\.\], got 0"),
    ("unigram ignore_ids int", lambda: UnigramLM(4, ignore_ids=1), TypeError, r"UnigramLM: ignore_ids must be a tuple"),
    ("uniform_loss 0", lambda: uniform_loss(0), ValueError, r"uniform_loss: vocab_size must be an int in \[1, \.\.\.\], got 0"),
    # evaluation (was: IndexError 'index out of range in self', range() arg 3 must not be zero, nan, a made-up 0)
    ("mean_loss id >= vocab", lambda: mean_loss(_m(), torch.full((2, 5), 400)), ValueError,
     r"mean_loss: windows hold 400 at position \(0, 0\), outside the vocabulary \[0, 300\)"),
    ("per_token_losses id >= vocab", lambda: per_token_losses(_m(), torch.full((2, 5), 400)), ValueError,
     r"per_token_losses: windows hold 400"),
    ("mean_loss batch_size 0", lambda: mean_loss(_m(), W, batch_size=0), ValueError,
     r"mean_loss: batch_size must be an int in \[1, \.\.\.\], got 0"),
    ("mean_loss every target ignored", lambda: mean_loss(_m(), torch.ones(2, 5, dtype=torch.long), ignore_ids=(1,)),
     ValueError, r"mean_loss: no target is scored: every one is in ignore_ids"),
    ("mean_loss no windows", lambda: mean_loss(_m(), torch.ones(0, 5, dtype=torch.long)), ValueError,
     r"mean_loss: windows are empty: shape \(0, 5\)"),
    ("mean_loss windows of one id", lambda: mean_loss(_m(), torch.ones(2, 1, dtype=torch.long)), ValueError,
     r"mean_loss: windows must hold at least 2 ids per row, got shape \(2, 1\)"),
    ("loss_by_position, a position never scored", lambda: loss_by_position(_m(), _ids(5, 1, 7, 8)[None], ignore_ids=(1,)),
     ValueError, r"loss_by_position: no target is scored at position\(s\) \[0\]"),
    ("loss_by_context context 0", lambda: loss_by_context(_m(), W, [0], 3), ValueError,
     r"loss_by_context: each of contexts must be an int in \[1, \.\.\.\], got 0"),
    ("loss_by_context contexts int", lambda: loss_by_context(_m(), W, 2, 3), TypeError,
     r"loss_by_context: contexts must be a sequence of context lengths, got 2"),
    ("cached_logits prompt_len 0", lambda: cached_logits(_m(), torch.arange(1, 12), 0), ValueError,
     r"cached_logits: prompt_len must be an int in \[1, 11\], got 0"),
    ("perplexity of a negative loss", lambda: perplexity(-1.0), ValueError, r"perplexity: loss_nats must be a loss in nats >= 0"),
    ("perplexity nan", lambda: perplexity(math.nan), ValueError, r"perplexity: loss_nats must be a loss in nats >= 0"),
    # head scores (was: nan on too-short maps, IndexError, a path through position -1)
    ("previous_token_scores S=1", lambda: heads.previous_token_scores(_maps(1)), ValueError,
     r"previous_token_scores: needs maps of at least 2 positions"),
    ("first_token_scores min_query >= S", lambda: heads.first_token_scores(_maps(5), min_query=5), ValueError,
     r"first_token_scores: min_query must be an int in \[0, 4\], got 5"),
    ("first_token_scores min_query < 0", lambda: heads.first_token_scores(_maps(5), min_query=-2), ValueError,
     r"first_token_scores: min_query must be an int in \[0, 4\], got -2"),
    ("induction_scores length 0", lambda: heads.induction_scores(_maps(5), 0), ValueError,
     r"induction_scores: length must be an int in \[1, 2\], got 0"),
    ("induction_scores length too long", lambda: heads.induction_scores(_maps(5), 3), ValueError,
     r"induction_scores: length must be an int in \[1, 2\], got 3"),
    ("attention_by_distance max_distance -1", lambda: heads.attention_by_distance(_maps(5), -1), ValueError,
     r"attention_by_distance: max_distance must be an int in \[0, \.\.\.\], got -1"),
    ("hop_path query -1", lambda: heads.hop_path(_maps(5)[:, 0], -1), ValueError,
     r"hop_path: query_pos must be an int in \[0, 4\], got -1"),
    ("hop_path maps of a batch", lambda: heads.hop_path(_maps(5), 2), ValueError,
     r"hop_path: maps must be \(L, H, S, S\), the maps of one sequence"),
    ("top_heads k 0", lambda: heads.top_heads(torch.ones(2, 3), 0), ValueError, r"top_heads: k must be an int in \[1, \.\.\.\], got 0"),
    ("repeated_random_tokens low >= high", lambda: heads.repeated_random_tokens(2, 3, 5, 5, 1), ValueError,
     r"repeated_random_tokens: the ids are drawn from \[low, high\), so high must be > low, got \[5, 5\)"),
    ("sampled_tokens nan", lambda: heads.sampled_tokens(2, 3, torch.tensor([0.5, math.nan])), ValueError,
     r"sampled_tokens: probs must be a 1-D tensor of finite non-negative weights"),
    ("duplicate_token_scores window 0", lambda: heads.duplicate_token_scores(_maps(5), _ids(1, 2, 1, 2, 3)[None], 0),
     ValueError, r"duplicate_token_scores: window must be an int in \[1, \.\.\.\], got 0"),    # was: read as no window
    # training (was: a negative learning rate, range() arg 3, IndexError 'Target 400 is out of bounds', nan)
    ("lr_at step beyond steps", lambda: lr_at(20, 10, 1e-3, 2), ValueError, r"lr_at: step must be an int in \[0, 9\], got 20"),
    ("lr_at negative step", lambda: lr_at(-3, 10, 1e-3, 2), ValueError, r"lr_at: step must be an int in \[0, 9\], got -3"),
    ("lr_at min_lr_ratio -1", lambda: lr_at(9, 10, 1e-3, 2, -1), ValueError,
     r"lr_at: min_lr_ratio must be a number in \[0, 1\], got -1"),
    ("smoothed every 0", lambda: TrainHistory(loss=[1.0]).smoothed(0), ValueError,
     r"TrainHistory.smoothed: every must be an int in \[1, \.\.\.\], got 0"),
    ("param_groups negative decay", lambda: param_groups(_m(), -1), ValueError,
     r"param_groups: weight_decay must be a number >= 0, got -1"),
    ("shift_targets float window", lambda: shift_targets(torch.ones(2, 5)), TypeError,
     r"shift_targets: window must hold integer token ids, got dtype torch.float32"),
    ("shift_targets ignore_ids int", lambda: shift_targets(torch.ones(2, 5, dtype=torch.long), 1), TypeError,
     r"shift_targets: ignore_ids must be a tuple of token ids"),
    ("next_token_loss id >= vocab", lambda: next_token_loss(_m(), torch.full((2, 5), 400)), ValueError,
     r"token id 400 at \(batch, position\) \(0, 0\) is outside \[0, 300\)"),
    ("next_token_loss reduction sum", lambda: next_token_loss(_m(), W, (), "sum"), ValueError,
     r"next_token_loss: reduction must be 'mean' or 'none', got 'sum'"),
    ("next_token_loss every target ignored", lambda: next_token_loss(_m(), torch.ones(2, 5, dtype=torch.long), (1,)),
     ValueError, r"next_token_loss: no target is scored"),
    ("train batches not callable", lambda: _train(5), TypeError,
     r"train: batches must be a function generator -> \(tokens, targets\), got int"),
    ("train batch function returns one tensor", lambda: _train(lambda g: torch.ones(2, 4, dtype=torch.long)), TypeError,
     r"train: the batch function must return \(tokens, targets\), two \(B, S\) tensors"),
    ("train target >= vocab", lambda: _train(_batch(torch.ones(2, 4, dtype=torch.long), torch.full((2, 4), 400))),
     ValueError, r"train: target 400 at \(batch, position\) \(0, 0\) is outside \[0, 300\) and is not IGNORE"),
    ("train targets of another shape", lambda: _train(_batch(torch.ones(2, 4, dtype=torch.long),
                                                             torch.ones(2, 3, dtype=torch.long))),
     ValueError, r"train: targets must be integer ids of the tokens' shape \(2, 4\)"),
    ("train every target IGNORE", lambda: _train(_batch(torch.ones(2, 4, dtype=torch.long), torch.full((2, 4), -100))),
     ValueError, r"train: the batch scores no target: every one is IGNORE"),   # was: 'the loss nan is not finite'
    ("train eval_fn not callable", lambda: _train(_batch(W[:, :4], W[:, 1:5]), eval_fn=3, eval_every=1), TypeError,
     r"train: eval_fn must be a function model -> validation loss, got int"),
    ("train a model without ModelArgs", lambda: train(torch.nn.Linear(2, 2), lambda g: None, 2, progress=False, warmup=0),
     TypeError, r"train: model must be a Transformer"),
    # the token stream and the synthetic task (was: an empty batch, RuntimeError, a silent accuracy of 0)
    ("TokenStream of a list", lambda: TokenStream([1, 2, 3]), TypeError, r"TokenStream: ids must be a torch.Tensor"),
    ("TokenStream float ids", lambda: TokenStream(torch.rand(10)), TypeError, r"TokenStream: ids must hold integer"),
    ("TokenStream.sample batch 0", lambda: STREAM.sample(0, 4), ValueError,
     r"TokenStream: batch_size must be an int in \[1, \.\.\.\], got 0"),
    ("TokenStream.batches batch 0", lambda: STREAM.batches(0, 4), ValueError, r"batch_size must be an int in \[1, \.\.\.\], got 0"),
    ("TokenStream.windows max_windows 0", lambda: STREAM.windows(4, 0), ValueError,
     r"TokenStream.windows: max_windows must be an int in \[1, \.\.\.\], got 0"),
    ("TokenStream.sample generator int", lambda: STREAM.sample(2, 4, 5), TypeError,
     r"TokenStream: generator must be a torch.Generator or None, got int"),
    ("TokenStream.from_documents no tokenizer", lambda: TokenStream.from_documents(["a"], None), TypeError,
     r"tokenizer must be a Tokenizer"),
    ("KeyRecall.sample batch -1", lambda: QUERY_TASK.sample(-1), ValueError,
     r"KeyRecall.sample: batch_size must be an int in \[1, \.\.\.\], got -1"),
    ("KeyRecall.sample key_pos out of range", lambda: QUERY_TASK.sample(2, None, _ids(100, 1)), ValueError,
     r"KeyRecall.sample: key_pos must be a \(2,\) integer tensor of positions in \[0, 8\]"),
    ("KeyRecall n_keys str", lambda: KeyRecall(n_keys="3"), TypeError, r"KeyRecall.n_keys must be an int, got '3'"),
    ("accuracy_by_distance no sequences", lambda: accuracy_by_distance(_m(), QUERY_TASK, n_sequences=0), ValueError,
     r"accuracy_by_distance: n_sequences must be an int in \[1, \.\.\.\], got 0"),         # was: accuracy 0.0 at every distance
    ("accuracy_by_distance batch 0", lambda: accuracy_by_distance(_m(), QUERY_TASK, 4, 1, 0), ValueError,
     r"accuracy_by_distance: batch_size must be an int in \[1, \.\.\.\], got 0"),
    ("key_influence with one key", lambda: key_influence_by_distance(_m(), KeyRecall(n_keys=1, n_noise=4, seq_len=10)),
     ValueError, r"key_influence_by_distance: swapping the key for another needs a task with n_keys >= 2"),
    # the tokenizers (was: sentencepiece's own TypeError; the pure-Python one returned <unk> for None)
    ("Tokenizer.piece_to_id(None)", lambda: _tok().piece_to_id(None), TypeError, r"piece must be a str such as '▁Hello', got NoneType"),
    ("BPETokenizer.piece_to_id(None)", lambda: _tok("bpe").piece_to_id(None), TypeError, r"piece must be a str"),
    ("Tokenizer.decode(None)", lambda: _tok().decode(None), TypeError, r"ids must be a sequence of ints, got NoneType"),
    ("Tokenizer.decode of a 2-D tensor", lambda: _tok().decode(torch.tensor([[1, 2]])), ValueError,
     r"ids must be a 1-D sequence of ints, got an array of shape \(1, 2\)"),
    ("Tokenizer.encode bos='yes'", lambda: _tok().encode("hi", bos="yes"), TypeError, r"bos must be True or False, got 'yes'"),
    ("Tokenizer.from_file(None)", lambda: Tokenizer.from_file(None), TypeError, r"path must be a str or os.PathLike"),
    ("Tokenizer.from_file('')", lambda: Tokenizer.from_file(""), ValueError, r"path is empty: name a tokenizer.model file"),
    ("BPETokenizer.from_bytes(None)", lambda: BPETokenizer.from_bytes(None), TypeError,
     r"a serialized model must be bytes, got NoneType"),
    # exercises (was: TypeError unhashable type, OverflowError, float() of a complex)
    ("check with a list for the id", lambda: check(["01.1"], 1), TypeError,
     r"exercise must be an exercise id such as '05.1' \(a str\), got \['01.1'\]"),
    ("form_of(5)", lambda: form_of(5), TypeError, r"exercise must be an exercise id"),
    # checkpoints, paths and the model (was: the working directory read or written; raw errors)
    ("load_model('')", lambda: load_model(""), ValueError, r"checkpoint path is empty \(''\); give a directory"),
    ("load_model(None)", lambda: load_model(None), TypeError, r"checkpoint path must be a path \(str or os.PathLike\)"),
    ("save_checkpoint(model, '')", lambda: save_checkpoint(_m(), ""), ValueError, r"save_checkpoint: path is empty"),
    ("ModelArgs.from_hf_config(None)", lambda: ModelArgs.from_hf_config(None), TypeError, r"config path must be a path"),
    ("load_pretrained probe not callable", lambda: load_pretrained(".", probe=5), TypeError,
     r"load_pretrained: probe must be a function device -> DeviceInfo"),
    ("recorded_path outside the repository", lambda: results.recorded_path("../../etc/passwd"), ValueError,
     r"recorded_path: relpath must lie inside the repository \(relative, no '..'\)"),
    # weight formats, attention, counts, parallelism (was: int64 garbage, wrong messages, ZeroDivisionError)
    ("Int8Linear on integer activations", lambda: Int8Linear.from_weight(torch.randn(4, 6))(torch.ones(2, 6, dtype=torch.long)),
     TypeError, r"an int8 layer multiplies floating-point activations, got torch.int64"),
    ("Int8Linear.from_linear(Conv1d)", lambda: Int8Linear.from_linear(torch.nn.Conv1d(2, 2, 1)), TypeError,
     r"Int8Linear.from_linear expects an nn.Linear, got Conv1d"),        # was: 'Int8Linear has no bias'
    ("Int8Linear.from_weight 1-D", lambda: Int8Linear.from_weight(torch.randn(4)), ValueError,
     r"Int8Linear.from_weight expects a 2-D weight \(out, in\), got \(4,\)"),
    ("quantize_model(5)", lambda: quantize_model(5), TypeError, r"expected a model \(an nn.Module\)"),
    ("replace_linears make returns junk", lambda: replace_linears(torch.nn.Sequential(torch.nn.Linear(2, 2)), lambda l: 5),
     TypeError, r"0: make returned 'int', not a layer"),
    ("formats_in(5)", lambda: formats_in(5), TypeError, r"formats_in expects a model"),
    ("flash_attention block_q 0", lambda: flash_attention(*(torch.randn(1, 2, 8, 4),) * 3, None, True, 0), ValueError,
     r"flash_attention: block_q must be an int >= 1, got 0"),
    ("flash_attention 3-D", lambda: flash_attention(*(torch.randn(2, 8, 4),) * 3), ValueError,
     r"flash_attention expects q \(B, H, S, D\)"),
    ("sequences_that_fit seq_len 0", lambda: sequences_that_fit(ModelArgs.mistral_7b(), 8e10, 0), ValueError,
     r"sequences_that_fit: seq_len must be an int >= 1, got 0"),
    ("keys_seen past -1", lambda: keys_seen(ModelArgs.mistral_7b(), -1, 3), ValueError,
     r"keys_seen: past must be an int >= 0, got -1"),
    ("prefill_cost chunk 0", lambda: prefill_cost(ModelArgs.mistral_7b(), 10, chunk=0), ValueError,   # was: read as W
     r"prefill_cost: chunk must be an int >= 1, got 0"),
    ("dtype_bytes('bf16')", lambda: dtype_bytes("bf16"), TypeError, r"dtype_bytes: dtype must be a torch.dtype"),
]


def _parallel():
    from mistral_nb.parallel import launch, shard_model
    from mistral_nb.parallel.comm import SingleComm

    return [
        ("launch fn not callable", lambda: launch(5, 2, mode="threads"), TypeError,
         r"fn must be a function fn\(comm, \*args, \*\*kwargs\), got int"),
        ("launch args not a tuple", lambda: launch(lambda c, x: x, 2, 5, mode="threads"), TypeError,
         r"args must be a tuple of fn's arguments after comm, got int"),
        ("launch timeout nan", lambda: launch(lambda c: 1, 2, timeout=math.nan, mode="threads"), ValueError,
         r"timeout must be a number of seconds > 0, got nan"),
        ("shard_model(5)", lambda: shard_model(5, SingleComm()), TypeError, r"shard_model expects a whole Transformer"),
        ("shard_model comm 5", lambda: shard_model(_m(), 5), TypeError, r"comm must be a Comm"),
    ]


@pytest.mark.parametrize("case, call, exc, message", BAD_INPUTS + _parallel(), ids=[c[0] for c in BAD_INPUTS + _parallel()])
def test_bad_inputs_get_a_clear_error(case, call, exc, message):
    with pytest.raises(exc, match=message):
        call()


def test_the_neighbours_of_the_bad_inputs_still_work():
    """The valid values next to each refused one keep their results."""
    ids = _ids(0, 1, 2, 3, 2, 1, 0, 3)
    assert float(UnigramLM(4).fit(ids).probs().sum()) == pytest.approx(1.0)
    assert float(BigramLM(4).fit(ids).probs(3).sum()) == pytest.approx(1.0)
    assert perplexity(1000) == math.inf and perplexity(math.inf) == math.inf        # was: OverflowError
    assert perplexity(torch.tensor(math.log(7.0))) == pytest.approx(7.0)
    assert mean_loss(_m(), W, batch_size=2) == pytest.approx(mean_loss(_m(), W, batch_size=8))
    assert lr_at(0, 1, 1e-3, 0) == pytest.approx(1e-3) and lr_at(9, 10, 1e-3, 10) == pytest.approx(1e-3)
    assert heads.first_token_scores(_maps(5), min_query=0).shape == (2, 3)
    assert len(TokenStream.from_documents([], _tok())) == 0                            # empty, refused only when sampled


def test_exercise_answers_that_cannot_be_compared_are_wrong_answers(capsys):
    check("04.3", 10 ** 400)                                                           # was: OverflowError
    check("02.3", complex(1, 2))                                                       # was: TypeError from float()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("04.3: ✗ not yet")
    assert out[1].startswith("02.3: ✗ expected") and "cannot be compared: TypeError" in out[1]


def test_a_dimension_of_2_63_beside_a_zero_is_refused_in_the_header(tmp_path):
    from mistral_nb.checkpoint import CheckpointError
    from mistral_nb.checkpoint.safetensors_file import read_header

    f = tmp_path / "x.safetensors"
    header = json.dumps({"t": {"dtype": "F32", "shape": [2 ** 63, 0], "data_offsets": [0, 0]}}).encode()
    f.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(CheckpointError, match=r"x.safetensors: tensor 't' has a dimension of 2\*\*63 or more in its "
                                              r"shape \(9223372036854775808, 0\)"):
        read_header(f)                                       # was: accepted, then a raw overflow in torch.empty


def test_a_forward_on_an_empty_model_blames_the_model_not_the_tokens():
    with torch.device("meta"):
        model = Transformer(tiny_args(n_layers=1))
    with pytest.raises(ValueError, match=r"the model's weights are on the meta device \(built empty"):
        model(torch.tensor([[1, 2]]))                        # was: "Tensor on device cpu is not on the expected device meta!"


def test_the_corpus_reader_refuses_a_named_pipe(monkeypatch, tmp_path):
    import signal

    from mistral_nb.training import corpus

    fifo = tmp_path / "train.txt.xz"
    os.mkfifo(fifo)
    monkeypatch.setattr(corpus, "recorded_path", lambda relpath, *a, **k: fifo)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("blocked on the pipe")))
    signal.alarm(20)
    try:
        with pytest.raises(ValueError, match=r"train.txt.xz: corpus file is not a regular file \(it is a FIFO"):
            corpus.load_documents("train")                   # was: blocked forever
    finally:
        signal.alarm(0)


# ---- the five fixes of round 3 that had no test yet, and the gradient branch of the NaN stop

def test_a_non_finite_gradient_stops_training_before_the_update(tmp_path):
    args = tiny_args(n_layers=1)
    model = seeded_model(args, 0)
    before = model.output.weight.detach().clone()
    model.output.weight.register_hook(lambda g: g * float("inf"))        # finite loss, non-finite gradient
    with pytest.raises(FloatingPointError, match=r"train: step 1: the gradient norm .* is not finite"):
        train(model, _Batches(args.vocab_size), steps=3, warmup=1, progress=False)
    assert torch.equal(model.output.weight.detach(), before)           # the weights were not stepped


def test_a_resumed_state_with_a_negative_step_is_refused(tmp_path):
    args = tiny_args(n_layers=1)
    ckpt = tmp_path / "state.pt"
    train(seeded_model(args, 0), _Batches(args.vocab_size), steps=2, warmup=1, progress=False, checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=True)
    state["step"] = -3
    torch.save(state, ckpt)
    with pytest.raises(ValueError, match=r"the checkpoint's step is -3, not a count of steps done"):
        load_training_state(ckpt)


def test_token_stream_from_one_string_is_refused():
    from mistral_nb import Tokenizer
    from mistral_nb.training.corpus import TokenStream

    with pytest.raises((TypeError, ValueError), match=r"takes a list of documents, not one string \(wrap it: \[text\]\)"):
        TokenStream.from_documents("hello", Tokenizer.mistral_v1())


@pytest.mark.parametrize("limit", [-1, 1.5, True])
def test_load_documents_refuses_a_bad_limit(limit):
    from mistral_nb.training.corpus import load_documents

    with pytest.raises(ValueError, match=r"load_documents: limit must be None or an int >= 0"):
        load_documents("val", limit=limit)


def test_a_corpus_file_that_is_not_xz_is_named(tmp_path, monkeypatch):
    from mistral_nb.training import corpus

    bad = tmp_path / "val.txt.xz"
    bad.write_bytes(b"this is not xz")
    monkeypatch.setattr(corpus, "recorded_path", lambda *a, **k: bad)
    with pytest.raises(ValueError, match=r"val\.txt\.xz: not an xz-compressed UTF-8 corpus file \(LZMAError"):
        corpus.load_documents("val")


def test_sample_next_refuses_nan_logits():
    from mistral_nb.generate import sample_next

    logits = torch.tensor([[0.0, float("nan"), 1.0]])      # (greedy steps are checked by generate itself)
    for top_p in (1.0, 0.9):
        with pytest.raises(ValueError, match=r"sample_next: the logits hold NaN or inf, so no token can be sampled"):
            sample_next(logits, temperature=0.8, top_p=top_p, generator=torch.Generator().manual_seed(0))


def test_no_test_skips_when_a_required_package_is_missing():
    """Packages that requirements.txt installs are imported plainly: a broken install must fail, not skip."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    required = {re.split(r"[<>=\[ ;#]", line.strip(), maxsplit=1)[0].lower().replace("-", "_")
                for line in (root / "requirements.txt").read_text().splitlines() if line.strip() and not line.startswith(("#", "-"))}
    found = []
    for path in sorted((root / "tests").glob("*.py")):
        for name in re.findall(r"importorskip\(\s*[\"']([\w.]+)", path.read_text(encoding="utf-8")):
            if name.split(".")[0].lower() in required:
                found.append(f"{path.name}: {name}")
    assert not found, f"importorskip of required packages: {found}"
