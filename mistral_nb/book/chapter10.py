"""Chapter 10's exercises that are checked by running code: the small random model the chapter
quantizes, and the verifiers of exercises 10.4 (a Q4_0 block written by hand) and 10.5 (the head in int4)."""

from __future__ import annotations

__all__ = ["small_model", "verify_q4_0_by_hand", "verify_head_int4_flips"]


def verify_q4_0_by_hand(fn) -> bool:
    """10.4: the learner's Q4_0 block gives ggml's bytes on random blocks and on the awkward ones."""
    import torch

    from ..checkpoint.gguf_blocks import quantize_q4_0

    gen = torch.Generator().manual_seed(4)
    blocks = [torch.randn(32, generator=gen) * s for s in (1e-3, 1.0, 50.0)]
    blocks += [torch.zeros(32), torch.arange(32) - 16.0, torch.tensor([1.0, -1.0] * 16), -torch.rand(32, generator=gen)]
    for x in blocks:
        x = x.to(torch.bfloat16).float()
        got = fn(x.clone())
        got = list(got.tolist() if hasattr(got, "tolist") else got)
        if [int(b) for b in got] != quantize_q4_0(x[None])[0].tolist():
            return False
    return True


def small_model():
    """The random small model of chapter 10 (4 layers, dim 256, vocabulary 2,000, norms moved away
    from 1) and its (4, 128) tokens, as the chapter builds them."""
    import torch

    from ..config import ModelArgs
    from ..model import Transformer

    small = ModelArgs(dim=256, n_layers=4, head_dim=32, hidden_dim=896, n_heads=8, n_kv_heads=2, vocab_size=2000,
                      sliding_window=64)
    torch.manual_seed(0)
    model = Transformer(small).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
    torch.manual_seed(1)
    return model, torch.randint(0, small.vocab_size, (4, 128))


def verify_head_int4_flips(pair) -> bool:
    """10.5: recomputed here, on the learner's machine (the kernels round alike there)."""
    import copy

    import torch

    from ..speed.int4 import quantize_model_int4

    model, tokens = small_model()
    with torch.no_grad():
        ref = model(tokens).argmax(-1)
        flips = [int((quantize_model_int4(copy.deepcopy(model), skip=skip)(tokens).argmax(-1) != ref).sum())
                 for skip in (("output",), ())]
    return [int(v) for v in (pair.tolist() if hasattr(pair, 'tolist') else pair)] == flips
