"""The rolling-buffer cache: cached decode and chunked prefill equal the whole-sequence forward."""

import pytest
import torch

from helpers import WINDOW, random_model, rel_err, tiny_args
from mistral_nb import RollingBufferCache
from mistral_nb.costs import kv_cache_bytes
from mistral_nb.generate import left_pad, prefill
from mistral_nb import ModelArgs


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_args())


def test_cached_decode_equals_full_forward(model):
    torch.manual_seed(0)
    S = 4 * WINDOW + 3
    tokens = torch.randint(0, 300, (2, S))
    with torch.no_grad():
        full = model(tokens)
        cache = RollingBufferCache.for_model(model, batch_size=2)
        steps = torch.cat([model(tokens[:, i:i + 1], cache=cache) for i in range(S)], dim=1)
    assert rel_err(steps, full) < 1e-5


@pytest.mark.parametrize("chunk", [1, 3, WINDOW])
def test_chunked_prefill_equals_one_pass(model, chunk):
    torch.manual_seed(1)
    S = 3 * WINDOW + 2
    tokens = torch.randint(0, 300, (2, S))
    with torch.no_grad():
        full = model(tokens)
        cache = RollingBufferCache.for_model(model, batch_size=2)
        outs = [model(tokens[:, s:s + chunk], cache=cache) for s in range(0, S, chunk)]
    assert rel_err(torch.cat(outs, dim=1), full) < 1e-5


def test_cache_holds_exactly_w_slots_after_4w_tokens(model):
    tokens = torch.randint(0, 300, (1, 4 * WINDOW))
    cache = RollingBufferCache.for_model(model, batch_size=1)
    before = cache.nbytes()
    with torch.no_grad():
        for s in range(0, 4 * WINDOW, WINDOW):
            model(tokens[:, s:s + WINDOW], cache=cache)
    assert cache.k.shape == (3, 1, WINDOW, 2, 16) and cache.nbytes() == before
    # slot p mod W holds position p: the last W positions, each in its slot
    assert cache.slot_pos[0].tolist() == [3 * WINDOW + s for s in range(WINDOW)]
    assert cache.next_pos.tolist() == [4 * WINDOW]


def test_chunk_longer_than_window_is_refused(model):
    cache = RollingBufferCache.for_model(model, batch_size=1)
    with pytest.raises(ValueError, match="longer than the cache window"):
        model(torch.zeros(1, WINDOW + 1, dtype=torch.long), cache=cache)


def test_left_padded_batch_equals_each_prompt_alone(model):
    torch.manual_seed(2)
    prompts = [torch.randint(0, 300, (n,)).tolist() for n in (5, 2 * WINDOW + 1, 1)]
    tokens, positions = left_pad(prompts)
    cache = RollingBufferCache.for_model(model, batch_size=3)
    batched = prefill(model, tokens, positions, cache, chunk_size=WINDOW)
    for r, p in enumerate(prompts):
        with torch.no_grad():
            alone = model(torch.tensor([p]))[0, -1]
        assert rel_err(batched[r], alone) < 1e-5


def test_decode_step_writes_first_and_attends_to_the_w_slots_in_place(model):
    """A single token is written into its slot before attention: keys are the W slots themselves
    (no concatenated copy), and every buffer keeps its address (what a CUDA graph needs)."""
    torch.manual_seed(3)
    tokens = torch.randint(0, 300, (2, 3 * WINDOW))
    cache = RollingBufferCache.for_model(model, batch_size=2)
    with torch.no_grad():
        full = model(tokens)
    seen = []                                                             # the mask shape layer 0 gets
    hook = model.layers[0].attention.register_forward_pre_hook(lambda mod, a: seen.append(tuple(a[3].shape)))
    addresses = [t.data_ptr() for t in (cache.k, cache.v, cache.slot_pos, cache.next_pos)]
    with torch.no_grad():
        model(tokens[:, :WINDOW], cache=cache)                             # prefill: W + W keys
        steps = [model(tokens[:, i:i + 1], cache=cache) for i in range(WINDOW, 3 * WINDOW)]
    hook.remove()
    assert seen[0] == (2, 1, WINDOW, 2 * WINDOW)
    assert set(seen[1:]) == {(2, 1, 1, WINDOW)}                            # decode: the W slots only
    assert [t.data_ptr() for t in (cache.k, cache.v, cache.slot_pos, cache.next_pos)] == addresses
    assert rel_err(torch.cat(steps, dim=1), full[:, WINDOW:]) < 1e-5
    assert cache.next_pos.tolist() == [3 * WINDOW] * 2


def test_one_token_chunks_over_left_padding(model):
    """Chunks of one token over a left-padded batch: padding is neither written nor attended to,
    and a padding query (which has no valid key) still gets finite logits."""
    torch.manual_seed(4)
    prompts = [torch.randint(0, 300, (n,)).tolist() for n in (2, WINDOW + 3)]
    tokens, positions = left_pad(prompts)
    cache = RollingBufferCache.for_model(model, batch_size=2)
    with torch.no_grad():
        first = model(tokens[:, :1], cache=cache, positions=positions[:, :1])   # row 0 is padding here
        assert torch.isfinite(first).all()
        last = prefill(model, tokens[:, 1:], positions[:, 1:], cache, chunk_size=1)
    assert (cache.slot_pos[0] >= 0).sum() == 2                              # only the 2 real tokens
    for r, p in enumerate(prompts):
        with torch.no_grad():
            alone = model(torch.tensor([p]))[0, -1]
        assert rel_err(last[r], alone) < 1e-5


def test_kv_cache_bytes_7b():
    args = ModelArgs.mistral_7b()
    per_token = kv_cache_bytes(args, 1)
    assert per_token == 131_072                           # 32 layers x 2 x 8 heads x 128 x 2 bytes
    mha = args.replace(n_kv_heads=32)
    assert kv_cache_bytes(mha, 1) == 4 * per_token == 524_288
    assert kv_cache_bytes(args, 32768, rolling=False) == 8 * kv_cache_bytes(args, 32768)
    assert kv_cache_bytes(args, 8192, rolling=False) == 2 * kv_cache_bytes(args, 8192)
