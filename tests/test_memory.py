"""Memory that follows the need: the cache generate builds, and the masks the banded path keeps."""

import torch

from mistral_nb import ModelArgs, Transformer, generate
from mistral_nb import attention as attention_module
from mistral_nb.cache import RollingBufferCache


def test_generate_sizes_the_cache_to_the_sequence_not_the_window(monkeypatch):
    torch.manual_seed(0)
    model = Transformer(ModelArgs.tiny(sliding_window=64)).eval()
    sizes = []
    real = RollingBufferCache.for_model.__func__

    def spy(cls, m, batch_size, window=None):
        cache = real(cls, m, batch_size, window)
        sizes.append(cache.window)
        return cache

    monkeypatch.setattr(RollingBufferCache, "for_model", classmethod(spy))
    short = generate(model, [[1, 2, 3]], max_new_tokens=5)
    long = generate(model, [[1, 2, 3]], max_new_tokens=100)
    assert sizes == [3 + 5 - 1, 64]                      # min(W, prompt + new - 1) slots
    assert long[0][:5] == short[0]                       # the same tokens either way
    unwindowed = Transformer(ModelArgs.tiny(sliding_window=None)).eval()
    generate(unwindowed, [[1, 2], [3]], max_new_tokens=4)
    assert sizes[-1] == 2 + 4 - 1


def test_banded_path_keeps_few_small_masks():
    attention_module._band_bias.cache_clear()
    W, S = 64, 1024
    block = attention_module.default_block_size(W)
    biases = attention_module._band_biases(S, W, block, torch.device("cpu"), torch.float32)
    distinct = {id(b) for b in biases}
    assert len(biases) == S // block and len(distinct) == W // block + 1     # interior blocks share one mask
    kept = attention_module._band_bias.cache_info().currsize
    assert kept == len(distinct) <= attention_module._band_bias.cache_info().maxsize
    q = torch.randn(1, 2, S, 8)
    k, v = torch.randn(1, 1, S, 8), torch.randn(1, 1, S, 8)
    from mistral_nb.attention import attention_sdpa
    from mistral_nb.masks import sliding_window_mask
    dense = attention_sdpa(q, k, v, sliding_window_mask(S, W))
    banded = attention_module.banded_attention(q, k, v, W)
    assert torch.allclose(dense, banded, atol=1e-5)


def test_a_chunk_size_up_to_the_window_works_with_a_shorter_cache():
    torch.manual_seed(0)
    model = Transformer(ModelArgs.tiny(sliding_window=16)).eval()
    prompt = list(range(3, 12))                                         # 9 tokens; cache of 9 + 4 - 1 = 12 slots
    a = generate(model, [prompt], max_new_tokens=4, chunk_size=16)
    b = generate(model, [prompt], max_new_tokens=4, chunk_size=4)
    assert a == b == generate(model, [prompt], max_new_tokens=4)
