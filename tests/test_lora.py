"""LoRA (mistral_nb.lora) against peft on transformers' MistralForCausalLM: the same random weights,
the same adapters, the same logits, both ways; one optimizer step; merge; int8 bases; errors."""

import copy

import pytest
import torch
import torch.nn.functional as F

from helpers import random_hf_model, random_model, rel_err, tiny_args
from mistral_nb import load_model
from mistral_nb.costs import lora_parameter_count, trainable_parameter_count
from mistral_nb.lora import (LoRALinear, adapters_disabled, apply_lora, load_adapter, lora_layers, merge_lora,
                             merged_weight, save_adapter, unload_lora, unmerge_lora)

import peft  # noqa: E402  (required by requirements.txt: a broken install must fail, not skip)
pytestmark = pytest.mark.usefixtures("one_thread")

ALL = ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
HF_NAMES = {"wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "o_proj", "w1": "gate_proj", "w2": "down_proj",
            "w3": "up_proj"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(args, HF checkpoint dir): transformers' random tiny Mistral, saved by transformers."""
    args = tiny_args()
    path = tmp_path_factory.mktemp("lora") / "hf"
    random_hf_model(args, seed=3).save_pretrained(str(path))
    return args, path


def hf_model(path):
    from transformers import MistralForCausalLM

    return MistralForCausalLM.from_pretrained(str(path)).eval()


def peft_model(path, r, alpha, targets, seed):
    torch.manual_seed(seed)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=[HF_NAMES[t] for t in targets],
                             lora_dropout=0.0, task_type="CAUSAL_LM")
    return peft.get_peft_model(hf_model(path), config)


def randomize_adapters(model, seed):
    """B starts at zero (the adapter is then invisible): give every matrix random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora_layers(model):
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g) * 0.05)


def peft_layer(theirs, name):
    """peft's LoRA layer for our 'layers.i.attention.wq'."""
    i, block, leaf = name.split(".")[1:4]
    hf = theirs.base_model.model.model.layers[int(i)]
    return getattr(hf.self_attn if block == "attention" else hf.mlp, HF_NAMES[leaf])


def hf_rows(args, name, b, to_hf=True):
    """lora_B of wq/wk in the other RoPE layout (rows permuted per head); other layers unchanged."""
    from mistral_nb.rope import hf_to_mistral_qk, mistral_to_hf_qk

    heads = {"wq": args.n_heads, "wk": args.n_kv_heads}.get(name.split(".")[-1])
    return b if heads is None else (mistral_to_hf_qk if to_hf else hf_to_mistral_qk)(b, heads)


def tokens(args, shape=(2, 21), seed=0):
    return torch.randint(0, args.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


def test_initialisation_is_peft_s_draw_for_draw(pair):
    """One seed: the same A matrices as peft (same draws, same order), B zero, scaling alpha / r."""
    args, path = pair
    torch.manual_seed(11)
    ours = apply_lora(load_model(path), r=4, alpha=8, targets=ALL)
    theirs = peft_model(path, 4, 8, ALL, seed=11)
    for name, layer in lora_layers(ours):
        mod = peft_layer(theirs, name)
        assert torch.equal(layer.lora_A.weight, mod.lora_A["default"].weight), name
        assert not layer.lora_B.weight.any() and mod.scaling["default"] == layer.scaling == 2.0


@pytest.mark.parametrize("targets", [("wq", "wv"), ALL])
def test_our_adapter_loads_into_peft_with_the_same_logits(pair, tmp_path, targets):
    args, path = pair
    ours = apply_lora(load_model(path).eval(), r=4, alpha=8, targets=targets)
    randomize_adapters(ours, seed=1)
    save_adapter(ours, tmp_path / "ad")
    theirs = peft.PeftModel.from_pretrained(hf_model(path), str(tmp_path / "ad")).eval()
    x = tokens(args)
    with torch.no_grad():
        a, b = ours(x), theirs(x).logits
        with theirs.disable_adapter():
            base = theirs(x).logits
    assert rel_err(a, b) < 1e-5
    assert rel_err(a, base) > 1e-2          # the adapter matters, so the equality above says something


def test_peft_s_adapter_loads_into_ours_with_the_same_logits(pair, tmp_path):
    args, path = pair
    theirs = peft_model(path, 4, 16, ALL, seed=2).eval()
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    theirs.save_pretrained(str(tmp_path / "peft"))
    ours = load_adapter(load_model(path).eval(), tmp_path / "peft")
    assert ours.lora_config.r == 4 and ours.lora_config.alpha == 16 and ours.lora_config.targets == ALL
    x = tokens(args, seed=1)
    with torch.no_grad():
        assert rel_err(ours(x), theirs(x).logits) < 1e-5


def test_the_rope_permutation_of_lora_b_matters(pair, tmp_path):
    """Loading peft's q/k lora_B rows without the per-head permutation gives other logits."""
    args, path = pair
    ours = apply_lora(load_model(path).eval(), r=4, alpha=8, targets=("wq", "wk"))
    randomize_adapters(ours, seed=4)
    save_adapter(ours, tmp_path / "ad")
    theirs = peft.PeftModel.from_pretrained(hf_model(path), str(tmp_path / "ad")).eval()
    x = tokens(args)
    with torch.no_grad():
        assert rel_err(ours(x), theirs(x).logits) < 1e-5
        for name, layer in lora_layers(ours):
            layer.lora_B.weight.copy_(hf_rows(args, name, layer.lora_B.weight))   # peft's row order, unconverted
        assert rel_err(ours(x), theirs(x).logits) > 1e-3


def test_one_optimizer_step_updates_the_adapters_as_peft_does(pair):
    args, path = pair
    targets = ("wq", "wk", "wv", "w2")
    torch.manual_seed(5)
    ours = apply_lora(load_model(path), r=4, alpha=8, targets=targets)
    theirs = peft_model(path, 4, 8, targets, seed=5)
    randomize_adapters(ours, seed=6)                            # so that A gets a gradient too
    with torch.no_grad():
        for name, layer in lora_layers(ours):
            peft_layer(theirs, name).lora_B["default"].weight.copy_(hf_rows(args, name, layer.lora_B.weight))
    x, y = tokens(args, seed=2), tokens(args, seed=3)
    for model, logits in ((ours, lambda m: m(x)), (theirs, lambda m: m(x).logits)):
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        F.cross_entropy(logits(model).flatten(0, 1), y.flatten()).backward()
        opt.step()
    assert trainable_parameter_count(ours) == trainable_parameter_count(theirs) == lora_parameter_count(args, 4, targets)
    moved = worst = 0.0
    for name, layer in lora_layers(ours):
        theirs_layer = peft_layer(theirs, name)
        b = hf_rows(args, name, theirs_layer.lora_B["default"].weight, to_hf=False)
        worst = max(worst, (layer.lora_A.weight - theirs_layer.lora_A["default"].weight).abs().max().item(),
                    (layer.lora_B.weight - b).abs().max().item())
        moved = max(moved, layer.lora_B.weight.grad.abs().max().item())
    assert worst < 1e-6 and moved > 0                          # AdamW's first step moves each weight by ~lr = 1e-2


def test_merged_logits_equal_unmerged_and_unmerge_restores_the_base(pair):
    args, path = pair
    model = apply_lora(load_model(path).eval(), r=4, alpha=8, targets=ALL)
    randomize_adapters(model, seed=7)
    base_w = model.layers[1].attention.wq.base.weight.clone()
    layer = model.layers[1].attention.wq
    x = tokens(args, seed=4)
    with torch.no_grad():
        unmerged = model(x)
        h = torch.randn(3, args.dim)
        assert rel_err(layer(h), h @ merged_weight(layer).T) < 1e-6            # W + (alpha / r) B A
        merge_lora(model)
        merged = model(x)
        unmerge_lora(model)
    assert rel_err(merged, unmerged) < 1e-6
    assert (model.layers[1].attention.wq.base.weight - base_w).abs().max() < 1e-6
    with pytest.raises(ValueError, match="not merged"):
        unmerge_lora(model)
    plain = unload_lora(copy.deepcopy(model))
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    with torch.no_grad():
        assert rel_err(plain(x), unmerged) < 1e-6


def test_adapters_disabled_gives_the_base_model(pair):
    args, path = pair
    base = load_model(path).eval()
    model = apply_lora(copy.deepcopy(base), r=2, targets=("wv", "w3"))
    randomize_adapters(model, seed=8)
    x = tokens(args)
    with torch.no_grad():
        with adapters_disabled(model):
            off = model(x)
        on = model(x)
        ref = base(x)
    assert torch.equal(off, ref) and rel_err(on, ref) > 1e-2


def test_the_base_is_frozen_and_only_the_adapters_train(pair):
    args, path = pair
    model = apply_lora(load_model(path), r=8, targets=("wq", "wv"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert trainable_parameter_count(model) == lora_parameter_count(args, 8, ("wq", "wv")) == 3 * 8 * (64 + 64 + 64 + 32)


def test_dropout_applies_to_the_adapter_input_only(pair):
    args, path = pair
    model = apply_lora(load_model(path), r=4, targets=("wq",), dropout=0.5)
    layer = model.layers[0].attention.wq
    randomize_adapters(model, seed=9)
    h = torch.randn(4, args.dim)
    layer.train()
    torch.manual_seed(0)
    out = layer(h)
    torch.manual_seed(0)
    kept = F.dropout(h, 0.5, training=True)
    assert rel_err(out, layer.base(h) + layer.lora_B(layer.lora_A(kept)) * layer.scaling) < 1e-6
    layer.eval()
    assert rel_err(layer(h), h @ merged_weight(layer).T) < 1e-6


def test_lora_on_an_int8_base_trains_and_its_input_gradient_is_exact():
    """Adapters on Int8Linear: the base stays int8; grad_x of the frozen base is the one of its matrix."""
    from mistral_nb.speed.int8 import Int8Linear, quantize_model

    args = tiny_args()
    model = quantize_model(random_model(args, seed=1))
    apply_lora(model, r=4, targets=("wq", "wv", "w2"))
    assert isinstance(model.layers[0].attention.wq.base, Int8Linear)
    layer = model.layers[0].feed_forward.w2
    randomize_adapters(model, seed=2)
    h = torch.randn(5, args.hidden_dim, requires_grad=True)
    layer(h).square().sum().backward()
    h2 = h.detach().clone().requires_grad_(True)
    (h2 @ merged_weight(layer).T).square().sum().backward()
    assert rel_err(h.grad, h2.grad) < 1e-5
    x = tokens(args)
    before = model(x).detach()
    from mistral_nb.training.sft import Batch, fit

    batch = Batch(x, tokens(args, seed=1))
    history = fit(model, lambda g: batch, steps=5, lr=1e-2, warmup=1)
    assert history.loss[-1] < history.loss[0]
    assert isinstance(model.layers[0].attention.wq.base, Int8Linear) and rel_err(model(x), before) > 1e-3
    with pytest.raises(ValueError, match="cannot merge an adapter into a Int8Linear"):
        merge_lora(model)


def test_checkpointing_gives_the_same_gradients():
    """model.checkpointing recomputes each block in the backward: the same gradients, full and LoRA."""
    args = tiny_args()
    x, y = tokens(args, seed=5), tokens(args, seed=6)
    for lora in (False, True):
        grads = []
        for ckpt in (False, True):
            model = random_model(args, seed=2)
            if lora:
                torch.manual_seed(0)
                apply_lora(model, r=4, targets=ALL, dropout=0.1)       # dropout: the recompute draws the same masks
                randomize_adapters(model, seed=3)
            model.train()
            model.checkpointing = ckpt
            torch.manual_seed(1)
            F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
            grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
        assert max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[0]) < 1e-6


@pytest.mark.parametrize("call, match", [
    (lambda m: apply_lora(m, r=0), "r \\(the rank\\) must be an int >= 1"),
    (lambda m: apply_lora(m, targets=("wq", "q_proj")), "unknown target 'q_proj'"),
    (lambda m: apply_lora(m, targets="wq"), "not a string"),
    (lambda m: apply_lora(m, dropout=1.0), "dropout must be a probability"),
    (lambda m: apply_lora(apply_lora(m)), "already applied"),
    (lambda m: merge_lora(m), "no LoRA adapters"),
    (lambda m: save_adapter(m, "unused"), "no LoRA adapters"),
])
def test_bad_calls_are_refused_clearly(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(random_model(tiny_args()))


def test_an_adapter_of_another_shape_is_refused(pair, tmp_path):
    args, path = pair
    save_adapter(apply_lora(load_model(path), r=4, targets=("wq",)), tmp_path / "a")
    with pytest.raises(ValueError, match="another shape"):
        load_adapter(apply_lora(load_model(path), r=8, targets=("wq",)), tmp_path / "a")
    other = random_model(tiny_args(dim=32, head_dim=8), seed=0)
    with pytest.raises(ValueError, match="an adapter of another model"):
        load_adapter(other, tmp_path / "a")
    with pytest.raises(ValueError, match="beyond the model's 2 layers"):
        load_adapter(random_model(tiny_args(n_layers=2)), tmp_path / "a")
    import json

    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ValueError, match="use_dora = True"):
        load_adapter(load_model(path), tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(load_model(path), tmp_path)
