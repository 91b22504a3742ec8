"""generate(): batching, sampling, eos, seeds, and argument errors."""

import pytest
import torch

from helpers import WINDOW, random_model, tiny_args
from mistral_nb import generate
from mistral_nb.generate import sample_top_p


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_args())


def test_batched_generation_equals_one_by_one(model):
    torch.manual_seed(0)
    prompts = [torch.randint(3, 300, (n,)).tolist() for n in (3, WINDOW + 4, 2 * WINDOW + 1)]
    batched = generate(model, prompts, max_new_tokens=2 * WINDOW)
    for p, out in zip(prompts, batched):
        assert generate(model, [p], max_new_tokens=2 * WINDOW)[0] == out
        assert len(out) == 2 * WINDOW


def test_greedy_equals_argmax_of_full_forward(model):
    prompt = [5, 6, 7]
    out = generate(model, [prompt], max_new_tokens=3 * WINDOW)[0]
    seq = prompt + out
    with torch.no_grad():
        logits = model(torch.tensor([seq]))[0]
    assert logits[len(prompt) - 1:-1].argmax(-1).tolist() == out


def test_sampling_is_reproducible_with_seed(model):
    a = generate(model, [[1, 2, 3]], max_new_tokens=20, temperature=1.0, top_p=0.9, seed=42)
    b = generate(model, [[1, 2, 3]], max_new_tokens=20, temperature=1.0, top_p=0.9, seed=42)
    c = generate(model, [[1, 2, 3]], max_new_tokens=20, temperature=1.0, top_p=0.9, seed=43)
    assert a == b and a != c


def test_eos_stops_a_row(model):
    greedy = generate(model, [[1, 2, 3]], max_new_tokens=10)[0]
    eos = greedy[4]
    first = greedy.index(eos)
    out = generate(model, [[1, 2, 3], [9, 9]], max_new_tokens=10, eos_id=eos)
    assert out[0] == greedy[:first]


def test_top_p_keeps_the_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    g = torch.Generator().manual_seed(0)
    seen = {sample_top_p(probs, 0.7, g).item() for _ in range(200)}
    assert seen == {0, 1}            # 0.5 + 0.3 reaches 0.7; 2 and 3 are cut
    assert {sample_top_p(probs, 0.01, g).item() for _ in range(50)} == {0}


@pytest.mark.parametrize("kwargs,exc,message", [
    (dict(prompts=[]), ValueError, "non-empty list"),
    (dict(prompts=[[]]), ValueError, "prompt 0 is empty"),
    (dict(prompts=[[1, 300]]), ValueError, r"token id 300 is outside \[0, 300\)"),
    (dict(prompts=[[1, -1]]), ValueError, "token id -1"),
    (dict(prompts=[[1.5]]), TypeError, "must be ints"),
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
    (dict(temperature=-0.1), ValueError, "temperature"),
    (dict(top_p=0.0), ValueError, "top_p"),
    (dict(top_p=1.5), ValueError, "top_p"),
])
def test_bad_arguments(model, kwargs, exc, message):
    call = dict(prompts=[[1, 2]], max_new_tokens=4)
    call.update(kwargs)
    with pytest.raises(exc, match=message):
        generate(model, call.pop("prompts"), **call)


def test_zero_new_tokens(model):
    assert generate(model, [[1], [2, 3]], max_new_tokens=0) == [[], []]


def test_forward_rejects_out_of_range_ids(model):
    with pytest.raises(ValueError, match=r"token id 300 at \(batch, position\) \(0, 1\)"):
        model(torch.tensor([[1, 300]]))
    with pytest.raises(ValueError, match="shape"):
        model(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="integer"):
        model(torch.tensor([[0.5]]))


def test_generation_stops_soon_after_every_row_hit_eos(model, monkeypatch):
    from mistral_nb.generate import EOS_CHECK_EVERY

    first = generate(model, [[1, 2, 3]], max_new_tokens=1)[0][0]
    calls = []
    original = type(model).forward

    def counting_forward(self, *args, **kwargs):
        calls.append(kwargs.get("check", True))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "forward", counting_forward)
    out = generate(model, [[1, 2, 3]], max_new_tokens=200, eos_id=first)
    assert out == [[]]
    assert len(calls) <= 1 + EOS_CHECK_EVERY          # one prefill chunk, then at most one check period
    assert calls[0] is True and not any(calls[1:])     # prompts are validated, sampled tokens are not


def test_top_p_keep_rule():
    from mistral_nb.generate import top_p_keep

    sorted_probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert top_p_keep(sorted_probs, 0.7).tolist() == [True, True, False, False]
    assert top_p_keep(sorted_probs, 0.85).tolist() == [True, True, True, False]  # mass before 0.15 is 0.8
    assert top_p_keep(sorted_probs, 1e-9).tolist() == [True, False, False, False]


def test_compiled_decode_equals_eager_and_compiles_once(model):
    """generate(compile=True) runs decode steps through torch.compile: same tokens as eager, one
    compilation reused by later calls (static shapes), nothing added to the state_dict."""
    from torch._dynamo.utils import counters
    from mistral_nb.generate import compiled_decoder
    torch.manual_seed(5)
    prompts = [torch.randint(3, 300, (n,)).tolist() for n in (3, WINDOW + 2)]
    eager = generate(model, prompts, max_new_tokens=3 * WINDOW)
    keys = set(model.state_dict())
    counters.clear()
    assert generate(model, prompts, max_new_tokens=3 * WINDOW, compile=True) == eager
    frames = counters["stats"]["unique_graphs"]
    assert frames >= 1
    assert generate(model, prompts, max_new_tokens=3 * WINDOW, compile=True) == eager
    assert counters["stats"]["unique_graphs"] == frames                     # no recompilation
    assert compiled_decoder(model) is compiled_decoder(model)
    assert set(model.state_dict()) == keys
    # weights are inputs of the compiled step, not frozen constants: a change is seen
    with torch.no_grad():
        model.output.weight.mul_(-1)
    try:
        assert generate(model, prompts, max_new_tokens=WINDOW, compile=True) == \
            generate(model, prompts, max_new_tokens=WINDOW)
    finally:
        with torch.no_grad():
            model.output.weight.mul_(-1)


def test_on_token_sees_every_step_as_it_is_sampled():
    from helpers import random_model, tiny_args

    model = random_model(tiny_args(), 0)
    seen = []
    out = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=6, on_token=lambda t: seen.append(t.tolist()))
    assert [list(col) for col in zip(*seen)] == out
    with pytest.raises(TypeError, match="on_token must be a function"):
        generate(model, [[1, 2]], max_new_tokens=2, on_token="print")
