"""Fuzzing: random bytes and random ids give a result or the documented error — never a crash.

* tokenizers: random byte strings, decoded as UTF-8 with errors="replace" (so the text is valid Unicode,
  with U+FFFD where the bytes were not), encode exactly as sentencepiece does and decode back unchanged;
* the model and generate(): random token ids inside and outside [0, vocab) give logits or the
  ValueError that names the bad id — never an IndexError from the embedding;
* the safetensors reader: random bytes, and a real file with random bytes of its header overwritten,
  give a CheckpointError (or, when the damage happens to keep the header valid, a loaded model).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import random_model, tiny_args
from mistral_nb import CheckpointError, generate, load_model, save_checkpoint
from mistral_nb.checkpoint.safetensors_file import read_header

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
VOCAB = 300


# ---------------------------------------------------------------- tokenizers
@pytest.fixture(scope="module")
def tokenizers():
    import sentencepiece as spm

    from mistral_nb import tokenizer

    sp = spm.SentencePieceProcessor(model_proto=tokenizer.mistral_v1_model_bytes())
    return tokenizer.Tokenizer.mistral_v1(), tokenizer.BPETokenizer.mistral_v1(), sp


@FUZZ
@given(st.binary(max_size=120))
def test_random_bytes_tokenize_like_sentencepiece(tokenizers, data):
    tok, bpe, sp = tokenizers
    text = data.decode("utf-8", errors="replace")
    ids = sp.encode(text)
    assert bpe.encode(text) == ids
    assert bpe.decode(ids) == text
    assert tok.encode(text, bos=True) == [tok.bos_id] + ids
    assert tok.decode(tok.encode(text)) == text


@FUZZ
@given(st.lists(st.integers(-5, 32005), max_size=16))
def test_random_ids_decode_or_name_the_bad_id(tokenizers, ids):
    tok, bpe, sp = tokenizers
    bad = [i for i in ids if not 0 <= i < 32000]
    for t in (tok, bpe):
        if bad:
            with pytest.raises(ValueError, match=f"id {bad[0]} "):
                t.decode(ids)
        else:
            assert t.decode(ids) == sp.decode(ids)


# ---------------------------------------------------------------- model
@pytest.fixture(scope="module")
def model():
    return random_model(tiny_args(n_layers=2, vocab_size=VOCAB))


TOKEN = st.one_of(st.integers(0, VOCAB - 1), st.integers(-3, VOCAB + 3), st.sampled_from([-(2**62), 2**62]))


@FUZZ
@given(st.integers(1, 3), st.integers(1, 20), st.data())
def test_model_on_random_token_ids(model, batch, length, data):
    rows = [data.draw(st.lists(TOKEN, min_size=length, max_size=length)) for _ in range(batch)]
    tokens = torch.tensor(rows)
    flat = [t for r in rows for t in r]
    bad = [t for t in flat if not 0 <= t < VOCAB]
    if bad:
        with pytest.raises(ValueError, match=rf"token id -?\d+ at \(batch, position\) .* is outside \[0, {VOCAB}\)"):
            model(tokens)
    else:
        with torch.no_grad():
            logits = model(tokens)
        assert logits.shape == (*tokens.shape, VOCAB) and bool(logits.isfinite().all())


@FUZZ
@given(st.lists(st.lists(TOKEN, max_size=12), max_size=3), st.integers(-1, 4))
def test_generate_on_random_prompts(model, prompts, max_new_tokens):
    problems = (not prompts or any(not p for p in prompts) or max_new_tokens < 0
                or any(not 0 <= t < VOCAB for p in prompts for t in p))
    if problems:
        with pytest.raises(ValueError):
            generate(model, prompts, max_new_tokens=max_new_tokens)
    else:
        out = generate(model, prompts, max_new_tokens=max_new_tokens)
        assert [len(o) for o in out] == [max_new_tokens] * len(prompts)
        assert all(0 <= t < VOCAB for o in out for t in o)


# ---------------------------------------------------------------- safetensors reader
@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_as_safetensors(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("fuzz") / "x.safetensors"
    f.write_bytes(data)
    with pytest.raises(CheckpointError, match="x.safetensors"):
        read_header(f)


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = save_checkpoint(random_model(tiny_args(n_layers=1)), tmp_path_factory.mktemp("good") / "c")
    return path, (path / "consolidated.safetensors").read_bytes()


@FUZZ
@given(st.data())
def test_damaged_header_fails_cleanly(good_file, data):
    path, raw = good_file
    header_len = 8 + int.from_bytes(raw[:8], "little")
    damaged = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        damaged[data.draw(st.integers(0, header_len - 1))] = data.draw(st.integers(0, 255))
    (path / "consolidated.safetensors").write_bytes(bytes(damaged))
    try:
        load_model(path)                     # damage that keeps the header valid (e.g. in a metadata string)
    except CheckpointError as e:
        assert "consolidated.safetensors" in str(e) or "checkpoint is missing" in str(e)
    finally:
        (path / "consolidated.safetensors").write_bytes(raw)


# ---------------------------------------------------------------- header entries and config values (issue 12)
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=8)


@FUZZ
@given(st.sampled_from(["dtype", "shape", "data_offsets", None]), JSON)
def test_random_header_entries_fail_cleanly(good_file, field, value):
    """Any JSON value in place of a header field (or of the whole entry) gives a CheckpointError
    naming the file — never a TypeError, OverflowError or a silently reinterpreted shape."""
    import json
    path, raw = good_file
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    if field is None:
        header["norm.weight"] = value
    else:
        header["norm.weight"][field] = value
    text = json.dumps(header).encode()
    (path / "consolidated.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    try:
        with pytest.raises(CheckpointError, match="consolidated.safetensors"):
            load_model(path)
    finally:
        (path / "consolidated.safetensors").write_bytes(raw)


HF_FIELDS = ["hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "num_key_value_heads",
             "head_dim", "vocab_size", "rms_norm_eps", "rope_theta", "sliding_window", "hidden_act",
             "tie_word_embeddings", "rope_scaling", "model_type", "architectures"]


@pytest.fixture(scope="module")
def hf_file(tmp_path_factory):
    path = save_checkpoint(random_model(tiny_args(n_layers=1)), tmp_path_factory.mktemp("hf") / "c", layout="hf")
    return path, (path / "config.json").read_text()


EDGE = st.sampled_from([0, -1, 1, 2, 10**7, 2**64, 1e-300, 1e300, float("inf"), float("nan"), True, False, "32",
                         32.0, 32.9, [], {}, "silu", "mistral", ["MistralForCausalLM"]])


@FUZZ
@given(st.sampled_from(HF_FIELDS), st.one_of(EDGE, JSON))
def test_random_config_values_fail_cleanly(hf_file, field, value):
    """Any JSON value for a config.json field loads a model or raises ConfigError / CheckpointError
    naming config.json / the checkpoint — never a raw exception, never a replaced value."""
    import json
    from mistral_nb import ConfigError
    path, original = hf_file
    config = json.loads(original)
    config[field] = value
    (path / "config.json").write_text(json.dumps(config))
    try:
        model = load_model(path)
    except (ConfigError, CheckpointError) as e:
        assert str(path) in str(e)
    else:
        args = model.args
        read = {"hidden_size": args.dim, "num_hidden_layers": args.n_layers, "head_dim": args.head_dim,
                "intermediate_size": args.hidden_dim, "num_attention_heads": args.n_heads,
                "num_key_value_heads": args.n_kv_heads, "vocab_size": args.vocab_size, "rms_norm_eps": args.norm_eps,
                "rope_theta": args.rope_theta, "sliding_window": args.sliding_window}
        if field in read and value is not None:
            assert read[field] == value            # a value that loads is the value that was given
    finally:
        (path / "config.json").write_text(original)
