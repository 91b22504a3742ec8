"""SFT data (mistral_nb.training.sft): the chat format's scored positions against mistral_common,
packing without attention across conversations, padding, the same_segment mask, and fit."""

import pytest
import torch

from helpers import random_model, rel_err, tiny_args
from mistral_nb import Tokenizer
from mistral_nb.masks import check_segments, mask_matrix, packed_mask, same_segment, segment_positions
from mistral_nb.tokenizer.chat import ChatFormatError
from mistral_nb.training.loop import IGNORE
from mistral_nb.training.sft import (Example, encode_example, fit, pack_groups, packed_batch, pad_batch,
                                     sft_batches, sft_loss)

pytestmark = pytest.mark.usefixtures("one_thread")

CONVERSATIONS = {
    "one turn": [{"role": "user", "content": "Repeat this sentence: The cache rolls."},
                 {"role": "assistant", "content": "The cache rolls."}],
    "two turns": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"},
                  {"role": "user", "content": "And   twice that?\n"}, {"role": "assistant", "content": " 8, of course."}],
    "system": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hello"},
               {"role": "assistant", "content": "Hi! ✓"}],
}


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.mistral_v1()


def oracle(messages):
    """mistral_common's v1 encoding of a whole training conversation, and the positions of the tokens
    its assistant messages contribute (found by encoding the conversation's prefixes, after
    mistral_common's own normalisation, which moves system messages into the first user turn)."""
    from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest, InstructRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    kinds = {"user": UserMessage, "assistant": AssistantMessage, "system": SystemMessage}
    v1 = MistralTokenizer.v1()
    request = v1._instruct_request_normalizer.from_chat_completion_request(
        ChatCompletionRequest(messages=[kinds[m["role"]](content=m["content"]) for m in messages]))
    msgs = request.messages

    def tokens(k):
        return v1.instruct_tokenizer.encode_instruct(
            InstructRequest(messages=msgs[:k], system_prompt=request.system_prompt)).tokens

    full, scored = tokens(len(msgs)), set()
    for k, m in enumerate(msgs):
        if isinstance(m, AssistantMessage):
            scored |= set(range(len(tokens(k)), len(tokens(k + 1))))
    return full, scored


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_scored_positions_are_mistral_common_s_answer_tokens(tok, name):
    ids, scored = oracle(CONVERSATIONS[name])
    example = encode_example(tok, CONVERSATIONS[name])
    assert example.ids == ids
    assert {i for i, s in enumerate(example.scored) if s} == scored
    assert ids[max(scored)] == tok.eos_id                     # the answer's </s> is a target
    inputs, targets = example.shifted()
    assert [i + 1 for i, t in enumerate(targets) if t != IGNORE] == sorted(scored)


@pytest.mark.parametrize("messages, match", [
    ([{"role": "user", "content": "hi"}], "ends with an assistant answer"),
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}], "non-empty str"),
    ([{"role": "assistant", "content": "hi"}], "needs a user message before"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
     "'assistant' was expected"),
    ("hello", "non-empty list of messages"),
])
def test_bad_training_conversations_are_refused(tok, messages, match):
    with pytest.raises(ChatFormatError, match=match):
        encode_example(tok, messages)


def test_same_segment_is_a_composable_mask_predicate():
    seg = torch.tensor([[0, 0, 1, 1, 1, 2]])
    m = mask_matrix(same_segment(seg), torch.arange(6))
    assert m.shape == (1, 6, 6) and m[0, 2, 4] and not m[0, 1, 2] and m[0, 5, 5]
    packed = packed_mask(seg, window=2)[0]
    assert packed[4].tolist() == [False, False, False, True, True, False]   # causal, window 2, own segment
    assert segment_positions(seg).tolist() == [[0, 1, 0, 1, 2, 0]]
    with pytest.raises(ValueError, match="must not decrease.*row 0 goes from 1 to 0 at position 2"):
        check_segments(torch.tensor([[0, 1, 0]]), (1, 3))
    with pytest.raises(ValueError, match="segments has shape"):
        check_segments(seg, (1, 5))


def random_examples(n, seed=0, vocab=300):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        p, a = int(torch.randint(2, 9, (1,), generator=g)), int(torch.randint(1, 6, (1,), generator=g))
        ids = [1] + torch.randint(3, vocab, (p + a,), generator=g).tolist() + [2]
        out.append(Example(ids, [False] * (p + 1) + [True] * (a + 1)))
    return out


def test_a_packed_row_gives_the_logits_of_its_conversations_run_alone():
    """Attention stays inside each conversation and RoPE restarts: the same logits as separate runs,
    across the sliding window too (a conversation longer than W = 8)."""
    model = random_model(tiny_args(), seed=4).eval()
    examples = random_examples(6, seed=1) + [Example([1] + list(range(10, 30)) + [2], [False] * 12 + [True] * 10)]
    groups = pack_groups(examples, seq_len=32)
    assert len(groups) < len(examples) and sum(map(len, groups)) == len(examples)
    batch = packed_batch(examples, groups, seq_len=32)
    with torch.no_grad():
        packed = model(batch.tokens, segments=batch.segments)
        worst = 0.0
        for row, group in enumerate(groups):
            at = 0
            for i in group:
                inputs, _ = examples[i].shifted()
                alone = model(torch.tensor([inputs]))[0]
                worst = max(worst, rel_err(packed[row, at:at + len(inputs)], alone))
                at += len(inputs)
        unsegmented = model(batch.tokens)
    assert worst < 1e-5
    assert rel_err(unsegmented, packed) > 1e-3                # without segments, attention would leak
    scored = (batch.targets != IGNORE).sum().item()
    assert scored == sum(sum(e.scored[1:]) for e in examples)


def test_padding_changes_nothing_before_it_and_scores_nothing():
    model = random_model(tiny_args(), seed=5).eval()
    examples = random_examples(4, seed=2)
    batch = pad_batch(examples)
    with torch.no_grad():
        logits = model(batch.tokens)
        for row, e in enumerate(examples):
            inputs, targets = e.shifted()
            assert rel_err(logits[row, :len(inputs)], model(torch.tensor([inputs]))[0]) < 1e-5
            assert batch.targets[row, len(inputs):].eq(IGNORE).all()
    with pytest.raises(ValueError, match="example 0 needs .* more than seq_len = 3"):
        pad_batch(examples, seq_len=3)


def test_packed_and_padded_losses_agree_and_fit_learns_the_answers():
    """The mean loss over the same scored tokens is the same packed or padded; then a few steps of
    fit on a tiny model bring it down."""
    model = random_model(tiny_args(), seed=6).eval()
    examples = random_examples(8, seed=3)
    packed = packed_batch(examples, pack_groups(examples, 40), 40)
    with torch.no_grad():
        assert abs(sft_loss(model, packed).item() - sft_loss(model, pad_batch(examples)).item()) < 1e-5
    history = fit(model, sft_batches(examples, batch_size=4, seq_len=40), steps=30, lr=3e-3, warmup=3)
    with torch.no_grad():
        after = sft_loss(model, pad_batch(examples)).item()
    assert after < history.loss[0] - 1.0 and not model.training
    with pytest.raises(ValueError, match="no parameter that requires a gradient"):
        fit(model.requires_grad_(False), sft_batches(examples, 2, 40), steps=1)
