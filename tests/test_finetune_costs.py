"""Fine-tuning counts in mistral_nb.costs: trainable parameters, AdamW's state, and the activations
autograd keeps, checked against built models, a real optimizer and autograd's own saved tensors."""

import pytest
import torch
import torch.nn.functional as F

from helpers import random_model, tiny_args
from mistral_nb import ModelArgs
from mistral_nb.costs import (activation_bytes, adamw_state_bytes, block_saved_bytes, finetune_memory,
                              head_saved_bytes, int8_copy_bytes, lora_parameter_count, trainable_parameter_count)
from mistral_nb.lora import apply_lora

pytestmark = pytest.mark.usefixtures("one_thread")
ALL = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")


def saved_bytes(model, tokens, targets) -> int:
    """Bytes autograd keeps for the backward of one loss (parameters and buffers excluded; a storage once)."""
    keep = {t.untyped_storage().data_ptr() for t in list(model.parameters()) + list(model.buffers())}
    seen = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in keep:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())
    return sum(seen.values())


def test_lora_parameter_count_for_mistral_7b_and_a_built_model():
    assert lora_parameter_count(ModelArgs.mistral_7b(), 8, ("wq", "wv")) == 32 * 8 * (4096 + 4096 + 4096 + 1024)
    args = tiny_args()
    for r, targets in ((8, ("wq", "wv")), (3, ALL)):
        model = apply_lora(random_model(args), r=r, targets=targets)
        assert trainable_parameter_count(model) == lora_parameter_count(args, r, targets)
    with pytest.raises(ValueError, match="unknown target 'q_proj'"):
        lora_parameter_count(args, 8, ("q_proj",))


def test_adamw_state_is_two_float32_moments_per_trained_parameter():
    model = apply_lora(random_model(tiny_args()), r=4, targets=("wq", "w2"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params)
    F.cross_entropy(model(torch.randint(0, 300, (1, 5))).flatten(0, 1), torch.randint(0, 300, (5,))).backward()
    opt.step()
    state = sum(v.numel() * v.element_size() for s in opt.state.values() for k, v in s.items() if k != "step")
    assert state == adamw_state_bytes(trainable_parameter_count(model))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method, targets", [("full", ()), ("lora", ("wq", "wv")), ("lora", ALL), ("lora", ("wo", "w2"))])
def test_a_block_keeps_exactly_what_block_saved_bytes_says(method, targets, dtype):
    """The bytes one more block adds to what autograd keeps (a 3-layer model minus a 2-layer one)."""
    B, S = 2, 12
    x, y = torch.randint(0, 300, (B, S)), torch.randint(0, 300, (B, S))
    got = {}
    for layers in (2, 3):
        model = random_model(tiny_args(n_layers=layers), seed=0).to(dtype).train()
        if method == "full":
            model.requires_grad_(True)
        else:
            apply_lora(model, r=4, targets=targets)
        got[layers] = saved_bytes(model, x, y)
    per_token = sum(block_saved_bytes(tiny_args(), method, targets, r=4, bytes_per_value=dtype.itemsize).values())
    assert got[3] - got[2] == B * S * per_token


def test_int8_layers_without_an_adapter_keep_a_float_copy_per_block():
    from mistral_nb.speed.int8 import quantize_model

    B, S = 2, 12
    x, y = torch.randint(0, 300, (B, S)), torch.randint(0, 300, (B, S))
    got = {}
    for layers in (2, 3):
        model = quantize_model(random_model(tiny_args(n_layers=layers), seed=0).to(torch.bfloat16))
        apply_lora(model, r=4, targets=("wq", "wv"))
        got[layers] = saved_bytes(model.train(), x, y)
    per_token = sum(block_saved_bytes(tiny_args(), "lora", ("wq", "wv"), r=4, bytes_per_value=2).values())
    assert got[3] - got[2] == B * S * per_token + int8_copy_bytes(tiny_args(), ("wq", "wv"), 2)
    assert int8_copy_bytes(tiny_args(), ALL, 2) == 0


def test_the_whole_model_estimate_bounds_the_measurement_closely():
    """Blocks + head + the logits' gradient; the measurement adds the per-sequence mask and RoPE
    tables, and the first LoRA block keeps less than the others."""
    args, B, S = tiny_args(), 2, 12
    x, y = torch.randint(0, 300, (B, S)), torch.randint(0, 300, (B, S))
    model = apply_lora(random_model(args, seed=0).train(), r=4, targets=ALL)
    measured = saved_bytes(model, x, y)
    kept = activation_bytes(args, B, S, "lora", ALL, r=4, bytes_per_value=4) - B * S * args.vocab_size * 4
    assert 0.9 * kept < measured <= kept + 4 * S * S + 8 * S * args.head_dim
    assert head_saved_bytes(args, "lora", 4) == (args.dim + 1) * 4 + args.vocab_size * 4 + 8


def test_the_7b_budget_on_a_16_gb_gpu():
    """LoRA on the int8 7B fits a T4 with activation checkpointing, not without; full fine-tuning
    needs 16 bytes per parameter."""
    args = ModelArgs.mistral_7b()
    total = {ckpt: sum(finetune_memory(args, 1, 512, quantize="int8", checkpointing=ckpt).values()) / 1e9
             for ckpt in (False, True)}
    assert total[True] < 15 < total[False]
    full = finetune_memory(args, 1, 512, method="full")
    assert full["weights"] + full["gradients"] + full["AdamW moments"] == 16 * 7_241_732_096
    assert activation_bytes(args, 1, 512, checkpointing=True) < activation_bytes(args, 1, 512) / 5
