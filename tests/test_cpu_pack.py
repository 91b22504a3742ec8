"""cpu_pack: bf16 linear weights packed for oneDNN give the plain bf16 products, load and generate the same,
save and copy as plain weights, and refuse what they cannot do (other dtypes and devices, int8)."""

import pytest
import torch

from helpers import random_model, tiny_args
from mistral_nb import Transformer, generate, load_model, save_checkpoint
from mistral_nb.speed.cpu_pack import PackedLinear, pack_available, pack_model
from mistral_nb.costs import model_nbytes

pytestmark = pytest.mark.skipif(not pack_available(), reason="no oneDNN bf16 linear kernel on this CPU / build")


@pytest.mark.parametrize("rows", [1, 3, 8, 130])
@pytest.mark.parametrize("shape", [(96, 64), (64, 224), (1000, 64)])
def test_packed_linear_equals_the_plain_bf16_linear(shape, rows):
    torch.manual_seed(0)
    linear = torch.nn.Linear(shape[1], shape[0], bias=False).to(torch.bfloat16)
    packed = PackedLinear.from_linear(linear)
    x = torch.randn(2, rows, shape[1]).to(torch.bfloat16)
    with torch.no_grad():
        want, got = linear(x).float(), packed(x).float()
    assert got.shape == want.shape == (2, rows, shape[0])
    # both accumulate in float32 and round once to bf16: at most one bf16 step apart
    assert torch.allclose(got, want, rtol=2 ** -7, atol=1e-2), float((got - want).abs().max())
    assert packed.packed.is_mkldnn and tuple(packed.packed.shape) == shape       # opaque oneDNN layout


def test_packed_model_loads_and_generates_like_the_bf16_model(tmp_path):
    args = tiny_args()
    save_checkpoint(random_model(args, seed=3), tmp_path / "m", layout="mistral")
    plain = load_model(tmp_path / "m", dtype=torch.bfloat16)
    packed = load_model(tmp_path / "m", dtype=torch.bfloat16, pack=True)
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in plain.modules())
    assert sum(isinstance(m, PackedLinear) for m in packed.modules()) == n_linear > 0
    assert model_nbytes(packed) == model_nbytes(plain)                      # the same bytes, rearranged
    tokens = torch.randint(3, args.vocab_size, (2, 3 * args.sliding_window))
    with torch.no_grad():
        a, b = plain(tokens), packed(tokens)
    assert (a - b).abs().max() / a.abs().max() < 0.05
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.9
    prompts = [[5, 6, 7], [8, 9]]
    assert len(generate(packed, prompts, max_new_tokens=2 * args.sliding_window)[0]) == 2 * args.sliding_window


def test_packed_model_saves_copies_and_has_a_full_state_dict(tmp_path):
    import copy

    args = tiny_args()
    plain = random_model(args, seed=3).to(torch.bfloat16)
    save_checkpoint(plain, tmp_path / "m", layout="mistral")
    packed = load_model(tmp_path / "m", dtype=torch.bfloat16, pack=True)
    state = packed.state_dict()                                   # the plain weights, by their usual names
    assert state.keys() == plain.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in plain.state_dict().items())
    save_checkpoint(packed, tmp_path / "again", layout="hf")      # written unpacked, as a plain checkpoint
    again = load_model(tmp_path / "again", dtype=torch.bfloat16)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in plain.state_dict().items())
    twin = copy.deepcopy(packed)                                  # an independent copy, packed again
    assert isinstance(twin.layers[0].attention.wq, PackedLinear)
    assert twin.layers[0].attention.wq.packed is not packed.layers[0].attention.wq.packed
    tokens = torch.randint(0, args.vocab_size, (1, 12))
    assert torch.equal(twin(tokens), packed(tokens))
    fresh = pack_model(Transformer(args).to(torch.bfloat16))
    fresh.load_state_dict(state)                                  # load_state_dict packs what it is given
    assert torch.equal(fresh(tokens), packed(tokens))


@pytest.mark.parametrize("kwargs, match", [
    (dict(dtype=torch.float32, pack=True), "needs dtype=torch.bfloat16"),
    (dict(dtype=torch.bfloat16, quantize="int8", pack=True), "cannot be combined"),
    (dict(dtype=torch.bfloat16, pack="yes"), "pack must be True or False"),
])
def test_pack_refuses_what_it_cannot_do(tmp_path, kwargs, match):
    args = tiny_args()
    save_checkpoint(random_model(args, seed=3), tmp_path / "m", layout="mistral")
    with pytest.raises((ValueError, TypeError), match=match):
        load_model(tmp_path / "m", **kwargs)


def test_packed_linear_refuses_float32_activations_and_wrong_shapes():
    layer = pack_model(torch.nn.Sequential(torch.nn.Linear(64, 32, bias=False).to(torch.bfloat16)))[0]
    with pytest.raises(TypeError, match="bf16 activations"):
        layer(torch.randn(1, 64))
    with pytest.raises(ValueError, match="does not fit"):
        layer.set_weight(torch.randn(64, 32))
