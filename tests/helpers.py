"""Shared builders for the tests: tiny random models and checkpoints written by transformers."""

from __future__ import annotations

from pathlib import Path

import torch

from mistral_nb import ModelArgs, Transformer

WINDOW = 8


def tiny_args(**overrides) -> ModelArgs:
    base = dict(dim=64, n_layers=3, head_dim=16, hidden_dim=128, n_heads=4, n_kv_heads=2, vocab_size=300,
                norm_eps=1e-5, rope_theta=10000.0, sliding_window=WINDOW)
    base.update(overrides)
    return ModelArgs(**base)


def random_model(args: ModelArgs, seed: int = 0) -> Transformer:
    """A Transformer with random weights, norms perturbed away from 1 so they matter (the same model
    every rank of the tensor-parallel tests builds)."""
    from mistral_nb.parallel import random_model as seeded_random_model

    return seeded_random_model(args, seed)


def hf_config(args: ModelArgs):
    from transformers import MistralConfig

    return MistralConfig(vocab_size=args.vocab_size, hidden_size=args.dim, intermediate_size=args.hidden_dim,
                         num_hidden_layers=args.n_layers, num_attention_heads=args.n_heads,
                         num_key_value_heads=args.n_kv_heads, head_dim=args.head_dim,
                         sliding_window=args.sliding_window, rms_norm_eps=args.norm_eps,
                         rope_theta=args.rope_theta, max_position_embeddings=4096, tie_word_embeddings=False)


def random_hf_model(args: ModelArgs, seed: int = 0):
    """transformers' MistralForCausalLM with random weights (norms perturbed), float32, eval mode."""
    from transformers import MistralForCausalLM

    torch.manual_seed(seed)
    model = MistralForCausalLM(hf_config(args)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def save_hf_sharded(model, path: Path) -> Path:
    """Let transformers write its own sharded checkpoint (several model-0000i-of-0000n files + index)."""
    model.save_pretrained(str(path), max_shard_size="100KB")
    assert (path / "model.safetensors.index.json").is_file(), "expected a sharded checkpoint"
    return path


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()
