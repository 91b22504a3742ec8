"""What chapter 07 says about the paper's guardrail prompt and the versions after v0.1, checked.

* The paper's system prompt (section 5.1) in a conversation: ``Tokenizer.encode_chat`` gives
  ``mistral_common``'s v1 tokens, the system text glued to the first user turn with a blank line.
* v0.2 drops the window and raises RoPE's base; v0.3 widens the vocabulary to 32,768, the size of
  ``mistral_common``'s v3 tokenizer.
"""

from __future__ import annotations

import math

import pytest

from mistral_nb import ModelArgs, Tokenizer
from mistral_nb.costs import kv_cache_bytes, parameter_count
from mistral_nb.rope import rope_inv_freq
from mistral_nb.tokenizer.chat import GUARDRAIL_SYSTEM_PROMPT

M7 = ModelArgs.mistral_7b()
QUESTION = "How to kill a linux process"          # the question of the paper's guardrail comparison


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.mistral_v1()


def test_the_guardrail_prompt_is_the_papers_text():
    assert GUARDRAIL_SYSTEM_PROMPT.startswith("Always assist with care, respect, and truth.")
    assert GUARDRAIL_SYSTEM_PROMPT.endswith("Ensure replies promote fairness and positivity.")
    assert len(GUARDRAIL_SYSTEM_PROMPT.split(". ")) == 4                    # four sentences


@pytest.mark.parametrize("follow_up", [False, True])
def test_guardrail_conversation_equals_mistral_common_v1(tok, follow_up):
    import mistral_common.tokens.tokenizers.mistral as mistral   # required (requirements.txt): a broken install fails
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    messages = [{"role": "system", "content": GUARDRAIL_SYSTEM_PROMPT}, {"role": "user", "content": QUESTION}]
    if follow_up:
        messages += [{"role": "assistant", "content": "Use the kill command."}, {"role": "user", "content": "Thanks"}]
    expected = mistral.MistralTokenizer.v1().encode_chat_completion(ChatCompletionRequest(messages=messages)).tokens
    ours = tok.encode_chat(messages)
    assert ours == expected
    glued = [{"role": "user", "content": GUARDRAIL_SYSTEM_PROMPT + "\n\n" + QUESTION}] + messages[2:]
    assert ours == tok.encode_chat(glued)                                   # v1 has no system slot


def test_v02_drops_the_window_and_keeps_every_parameter():
    hf = M7.to_hf_config() | {"sliding_window": None, "rope_theta": 1e6, "max_position_embeddings": 32768}
    v02 = ModelArgs.from_hf_config(hf)
    assert v02.sliding_window is None and v02.rope_theta == 1e6
    assert parameter_count(v02) == parameter_count(M7) == 7_241_732_096
    assert kv_cache_bytes(v02, 32768) == 8 * kv_cache_bytes(M7, 32768) == 32768 * 131_072


def test_a_larger_rope_base_keeps_more_pairs_slower_than_the_context():
    def slow_pairs(theta, context=32768):
        wavelengths = 2 * math.pi / rope_inv_freq(M7.head_dim, theta).double()
        return int((wavelengths > context).sum())

    assert slow_pairs(1e4) < slow_pairs(1e6) < M7.head_dim // 2


def test_v03_vocabulary_is_mistral_commons_v3_tokenizer():
    import mistral_common.tokens.tokenizers.mistral as mistral   # required (requirements.txt): a broken install fails
    assert mistral.MistralTokenizer.v3().instruct_tokenizer.tokenizer.n_words == 32768
    assert mistral.MistralTokenizer.v1().instruct_tokenizer.tokenizer.n_words == M7.vocab_size
    v03 = M7.replace(vocab_size=32768)
    assert parameter_count(v03) - parameter_count(M7) == 2 * 768 * 4096        # embedding + head rows
