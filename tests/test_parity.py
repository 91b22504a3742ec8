"""Parity with transformers' MistralForCausalLM: the spine of the project.

The same random weights are saved by transformers (sharded Hugging Face layout), converted to
Mistral's layout, loaded by this package from both, and compared logit by logit across the window.
"""

import pytest
import torch

from helpers import WINDOW, rel_err, tiny_args
from mistral_nb import generate, load_model

LENGTHS = [WINDOW - 1, WINDOW, WINDOW + 1, 4 * WINDOW + 3]


@pytest.mark.parametrize("layout", ["hf", "mistral"])
@pytest.mark.parametrize("seq_len", LENGTHS)
def test_logits_match_transformers(hf_pair, layout, seq_len):
    hf, hf_dir, mistral_dir = hf_pair
    model = load_model(hf_dir if layout == "hf" else mistral_dir)
    torch.manual_seed(seq_len)
    tokens = torch.randint(0, model.args.vocab_size, (2, seq_len))
    with torch.no_grad():
        ref = hf(tokens).logits.float()
        ours = model(tokens)
    assert ours.dtype == torch.float32 and ours.shape == ref.shape
    assert rel_err(ours, ref) < 1e-4


def test_layouts_differ_without_permutation(hf_pair):
    """Loading HF q/k rows without the RoPE permutation gives different logits: only logit tests catch it."""
    from mistral_nb.rope import mistral_to_hf_qk

    hf, hf_dir, _ = hf_pair
    model = load_model(hf_dir)
    tokens = torch.randint(0, model.args.vocab_size, (1, 12))
    with torch.no_grad():
        ref = hf(tokens).logits
        for layer in model.layers:  # undo the conversion: use HF's row order as if it were Mistral's
            a = layer.attention
            a.wq.weight.copy_(mistral_to_hf_qk(a.wq.weight, a.n_heads))
            a.wk.weight.copy_(mistral_to_hf_qk(a.wk.weight, a.n_kv_heads))
        wrong = model(tokens)
    assert rel_err(wrong, ref) > 1e-3   # vs < 1e-6 when converted; small because random init is near-uniform


def test_window_matters(hf_pair):
    """Sanity: beyond the window the model is not plain causal attention (else the tests above prove little)."""
    import dataclasses

    from mistral_nb import Transformer

    _, hf_dir, _ = hf_pair
    model = load_model(hf_dir)
    full = Transformer(dataclasses.replace(model.args, sliding_window=None))
    full.load_state_dict(model.state_dict())
    tokens = torch.randint(0, model.args.vocab_size, (1, 3 * WINDOW))
    with torch.no_grad():
        a, b = model(tokens), full.eval()(tokens)
    assert rel_err(a[:, :WINDOW], b[:, :WINDOW]) < 1e-6   # identical while the window covers everything
    assert rel_err(a[:, 2 * WINDOW:], b[:, 2 * WINDOW:]) > 1e-3


@pytest.mark.parametrize("layout", ["hf", "mistral"])
def test_greedy_generation_matches_transformers(hf_pair, layout):
    hf, hf_dir, mistral_dir = hf_pair
    model = load_model(hf_dir if layout == "hf" else mistral_dir)
    torch.manual_seed(7)
    for prompt_len, new in [(WINDOW - 2, 3 * WINDOW), (2 * WINDOW + 5, 2 * WINDOW)]:
        prompt = torch.randint(3, model.args.vocab_size, (1, prompt_len))
        with torch.no_grad():
            ref = hf.generate(prompt, max_new_tokens=new, do_sample=False, min_new_tokens=new,
                              pad_token_id=0, eos_token_id=None)[0, prompt_len:].tolist()
        ours = generate(model, [prompt[0].tolist()], max_new_tokens=new)[0]
        assert ours == ref, f"prompt_len={prompt_len}"
