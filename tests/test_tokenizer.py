"""Tests for mistral_nb.tokenizer: sentencepiece wrapper, pure-Python BPE, v1 chat format."""

from __future__ import annotations

import importlib.resources
import os
import random
import struct
import time

import pytest
import sentencepiece as spm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mistral_nb.tokenizer import (SPACE, BPETokenizer, ChatFormatError, PieceType, Tokenizer, format_chat,
                                  mistral_v1_model_bytes, parse_model_proto)
from mistral_nb.tokenizer.model_file import _iter_fields

HYPOTHESIS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.mistral_v1()


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.mistral_v1()


@pytest.fixture(scope="module")
def sp() -> spm.SentencePieceProcessor:
    """A reference sentencepiece processor, loaded independently of the code under test."""
    return spm.SentencePieceProcessor(model_proto=mistral_v1_model_bytes())


@pytest.fixture(scope="module")
def mistral_common_v1():
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    return MistralTokenizer.v1()


# --------------------------------------------------------------------------------------
# Vocabulary and known ids
# --------------------------------------------------------------------------------------


def test_special_ids_and_vocab_size(tok, bpe):
    for t in (tok, bpe):
        assert (t.unk_id, t.bos_id, t.eos_id, t.vocab_size) == (0, 1, 2, 32000)
        assert [t.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
        assert t.id_to_piece(3) == "<0x00>" and t.id_to_piece(258) == "<0xFF>"
        assert t.id_to_piece(22557) == "▁Hello"
        assert t.piece_to_id("▁Hello") == 22557
        assert t.piece_to_id("definitely not a piece") == 0  # sentencepiece's convention: unk


# Observed once from sentencepiece 0.2 on Mistral's tokenizer.model.v1; kept as a regression check.
KNOWN_IDS = {
    "Hello world": [22557, 1526],
    "": [],
    " ": [259],  # dummy prefix + the space: '▁▁'
    "   hello": [2287, 6312, 28709],  # '▁▁▁', '▁hell', 'o'
    "x   y": [1318, 259, 337],  # '▁x', '▁▁', '▁y': space runs are merged last
    "a\x00b": [264, 3, 28726],  # NUL has no piece: byte fallback <0x00>
    "\r\n": [1302, 13],  # '▁\r' is a piece, '\n' is <0x0A>
    "a\tb": [264, 12, 28726],  # tab is <0x09>
    "你好": [28705, 29383, 29530],
    "🤖": [28705, 243, 162, 167, 153],  # '▁' + 4 UTF-8 bytes F0 9F A4 96
    "<s>[INST]": [523, 28713, 28767, 28792, 16289, 28793],  # "<s>" is text here, never the BOS id
}


@pytest.mark.parametrize("text", list(KNOWN_IDS))
def test_known_ids(tok, bpe, sp, text):
    assert tok.encode(text, bos=False) == KNOWN_IDS[text]
    assert bpe.encode(text) == KNOWN_IDS[text]
    assert sp.encode(text) == KNOWN_IDS[text]  # the live reference agrees with the hard-coded ids
    assert tok.encode(text) == [1, *KNOWN_IDS[text]]


def test_bos_eos_flags(tok):
    assert tok.encode("Hello world") == [1, 22557, 1526]
    assert tok.encode("Hello world", bos=False, eos=True) == [22557, 1526, 2]
    assert tok.encode("", bos=True, eos=True) == [1, 2]
    assert tok.pieces("Hello world") == ["▁Hello", "▁world"]
    assert tok.decode([1, 22557, 1526, 2]) == "Hello world"  # control ids decode to nothing


def test_parse_model_proto_matches_sentencepiece_tables(sp):
    spec = parse_model_proto(mistral_v1_model_bytes())
    assert spec.model_type == 2  # BPE
    assert spec.byte_fallback and spec.add_dummy_prefix and spec.escape_whitespaces
    assert not spec.remove_extra_whitespaces and not spec.treat_whitespace_as_suffix
    assert spec.precompiled_charsmap == b"" and spec.unk_surface == " ⁇ "
    assert len(spec.pieces) == sp.vocab_size() == 32000
    for i in range(sp.vocab_size()):
        assert spec.pieces[i] == sp.id_to_piece(i)
        assert spec.scores[i] == sp.get_score(i)
        assert (spec.types[i] == PieceType.BYTE) == sp.is_byte(i)
        assert (spec.types[i] == PieceType.CONTROL) == sp.is_control(i)
        assert (spec.types[i] == PieceType.UNKNOWN) == sp.is_unknown(i)
    # the whitespace-only pieces all share the lowest score, so they are merged last
    assert {spec.scores[i] for i, p in enumerate(spec.pieces) if set(p) == {SPACE}} == {-1e9}


# --------------------------------------------------------------------------------------
# BPETokenizer == sentencepiece
# --------------------------------------------------------------------------------------

CORPUS = {
    "prose": "The quick brown fox jumps over the lazy dog. It's 5 o'clock; isn't it?",
    "prose_long": "Mistral 7B is a 7.3B parameter model that outperforms Llama 2 13B on all benchmarks. " * 5,
    "code": "def f(x):\n\tif x > 0:\n\t\treturn x ** 2  # square\n    else:\n        return -x\n",
    "code_json": '{"a": [1, 2, 3], "b": {"c": null}}\n',
    "space_runs": "a b  c   d    e     f      g       h" + " " * 17 + "i" + " " * 40 + "j",
    "only_spaces_1": " ",
    "only_spaces_2": "  ",
    "only_spaces_33": " " * 33,
    "leading_trailing": "   leading and trailing   ",
    "newlines": "line one\nline two\r\nline three\rend\n\n\n",
    "digits": "0 1 12 123 1234 3.14159265358979 1,000,000 2024-01-01 0x1F",
    "repeats": "aaaaaaaaaaa ============ ............ 00000000000 ------------ ~~~~ ** ##### ____",
    "long_number": "12345678901234567890123456789012345678901234567890",
    "chinese": "我爱自然语言处理。今天天气很好！",
    "japanese": "日本語のテキストです。カタカナとひらがな。",
    "korean": "안녕하세요, 세계! 한국어 문장입니다.",
    "arabic": "مرحبا بالعالم، هذه جملة عربية.",
    "hindi": "नमस्ते दुनिया, यह हिंदी वाक्य है।",
    "russian": "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "greek_hebrew_thai": "Καλημέρα κόσμε שלום עולם สวัสดีชาวโลก",
    "emoji": "I ❤️ 🤖🚀🎉 and 👍🏽",
    "emoji_zwj": "family 👨‍👩‍👧‍👦, rainbow 🏳️‍🌈, technologist 👩🏽‍💻",
    "flags": "🇫🇷🇩🇪🇯🇵🇺🇸",
    "combining": "e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353 cafe\u0301 vs café",
    "control_chars": "".join(chr(c) for c in range(0x20)) + "\x7f",
    "nul_alone": "\x00",
    "controls_mixed": "a\x00b\x01c\x1bd\x7fe\x85f",
    "high_planes": "\U0001d400\U0001f600\U00020000\U0002a6d6\U000e0041\U000f0000\U0010fffd",
    "specials": "\ufeff\ufffd\u200b\u200d\u2028\u2029\u00a0\u3000",
    "lower_block_char": f"a{SPACE}b {SPACE}{SPACE}",  # the '▁' character itself
    "markup": "<s>[INST] not special [/INST]</s> <unk> <0x41>",
    "empty": "",
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_bpe_matches_sentencepiece_on_corpus(bpe, sp, name):
    text = CORPUS[name]
    ids = sp.encode(text)
    assert bpe.encode(text) == ids
    assert bpe.pieces(text) == sp.encode(text, out_type=str)
    assert bpe.decode(ids) == sp.decode(ids)
    if SPACE not in text:  # '▁' in the input comes back as ' ', the only lossy case
        assert bpe.decode(ids) == text


@pytest.mark.parametrize("name", list(CORPUS))
def test_tokenizer_roundtrip_on_corpus(tok, sp, name):
    text = CORPUS[name]
    ids = tok.encode(text)
    assert ids == [1, *sp.encode(text)]
    assert tok.decode(ids) == sp.decode(ids)


def test_lower_block_character_decodes_as_space(bpe, tok):
    text = f"a{SPACE}b"
    assert bpe.encode(text) == tok.encode("a b", bos=False)
    assert bpe.decode(bpe.encode(text)) == "a b"


BIASED_ALPHABET = st.sampled_from(
    [" ", " ", " ", "\n", "\t", "\r", "\x00", "a", "e", "t", "Z", "0", "9", ".", ",", "'", SPACE, "é", "e\u0301"]
    + ["中", "文", "한", "ا", "ह", "я", "🤖", "👍🏽", "👨‍👩‍👧", "🇫🇷", "\u200d", "\U000e0041", "\U0010fffd", "\u3000"]
)


@HYPOTHESIS
@given(st.text())
def test_bpe_matches_sentencepiece_random_text(bpe, sp, text):
    ids = sp.encode(text)
    assert bpe.encode(text) == ids
    assert bpe.decode(ids) == sp.decode(ids)


@HYPOTHESIS
@given(st.lists(BIASED_ALPHABET, max_size=60).map("".join))
def test_bpe_matches_sentencepiece_biased_text(bpe, sp, text):
    ids = sp.encode(text)
    assert bpe.encode(text) == ids
    assert bpe.decode(ids) == sp.decode(ids)


@HYPOTHESIS
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200))
def test_bpe_matches_sentencepiece_ascii(bpe, sp, text):
    assert bpe.encode(text) == sp.encode(text)


@HYPOTHESIS
@given(st.text(alphabet="a =.0-\n", max_size=80))
def test_bpe_matches_sentencepiece_repetitive_text(bpe, sp, text):
    """Runs of the same character create many equal-score candidate pairs and stale heap entries."""
    assert bpe.encode(text) == sp.encode(text)


ANY_ID = st.one_of(
    st.integers(0, 31999),
    st.integers(0, 2),  # <unk>, <s>, </s>
    st.integers(3, 258),  # byte pieces: random bytes, often invalid UTF-8
    st.sampled_from([28705, 259, 2287, 22557, 1526]),  # '▁', '▁▁', '▁▁▁', '▁Hello', '▁world'
)


@HYPOTHESIS
@given(st.lists(ANY_ID, max_size=12))
def test_decode_matches_sentencepiece_on_any_ids(bpe, tok, sp, ids):
    """Arbitrary id sequences: invalid byte runs, <unk>, BOS in the middle, leading spaces."""
    assert bpe.decode(ids) == sp.decode(ids)
    assert tok.decode(ids) == sp.decode(ids)


def test_decode_details(bpe):
    assert bpe.decode([0]) == " ⁇ "  # <unk>
    assert bpe.decode([1, 2]) == ""
    assert bpe.decode([28705, 28705]) == " "  # only the first dummy '▁' is dropped
    assert bpe.decode([3 + 0x41, 22557]) == "A Hello"  # text before: no dummy prefix to drop
    assert bpe.decode([3 + 0xE2, 3 + 0x82]) == "\ufffd\ufffd"  # one U+FFFD per invalid byte
    assert bpe.decode([3 + 0xF0, 3 + 0x9F, 3 + 0xA4, 3 + 0x96]) == "🤖"


def test_long_input_is_fast_and_exact(bpe, sp):
    rng = random.Random(0)
    words = ["the", "tokenizer", "  ", "\n", "数据", "🤖", "x1", "Привет", "\t", "...", "e\u0301"]
    text = " ".join(rng.choice(words) for _ in range(20_000))  # ~100k characters
    start = time.perf_counter()
    ids = bpe.encode(text)
    elapsed = time.perf_counter() - start
    assert ids == sp.encode(text)
    assert elapsed < 10, f"pure-Python BPE took {elapsed:.1f}s on {len(text)} chars: quadratic?"


def test_merge_steps(bpe, sp):
    steps = bpe.merge_steps("Hello world")
    assert steps[0] == list("▁Hello▁world")
    assert steps[-1] == ["▁Hello", "▁world"] == sp.encode("Hello world", out_type=str)
    for before, after in zip(steps, steps[1:]):
        assert len(after) == len(before) - 1  # exactly one merge per step
        assert "".join(after) == "".join(before)
    # the spaces-last rule: '▁y' and '▁x' form before the run of spaces is merged
    assert bpe.merge_steps("x   y")[-1] == ["▁x", "▁▁", "▁y"]
    assert bpe.merge_steps("") == [[]]
    # unknown characters stay one symbol here; byte fallback happens after merging
    assert bpe.merge_steps("🤖")[-1] == ["▁", "🤖"]
    assert bpe.pieces("🤖") == ["▁", "<0xF0>", "<0x9F>", "<0xA4>", "<0x96>"]


def test_normalize(bpe):
    assert bpe.normalize("") == ""
    assert bpe.normalize(" ") == SPACE * 2
    assert bpe.normalize("a  b\tc\n") == f"{SPACE}a{SPACE}{SPACE}b\tc\n"


# --------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, 123, b"bytes", ["list"]])
def test_encode_rejects_non_str(tok, bpe, bad):
    with pytest.raises(TypeError, match="str"):
        tok.encode(bad)
    with pytest.raises(TypeError, match="str"):
        bpe.encode(bad)


def test_encode_rejects_lone_surrogate(tok, bpe):
    for t in (tok.encode, bpe.encode):
        with pytest.raises(ValueError, match="surrogate"):
            t("ab\ud800")


@pytest.mark.parametrize("ids, bad_id, position", [([1, 32000], 32000, 1), ([-1], -1, 0), ([5, 6, 10**9], 10**9, 2)])
def test_decode_rejects_out_of_range(tok, bpe, ids, bad_id, position):
    for t in (tok, bpe):
        with pytest.raises(ValueError, match=rf"id {bad_id} at position {position}"):
            t.decode(ids)


def test_decode_accepts_tensor_and_rejects_non_int(tok, bpe):
    import torch

    assert tok.decode(torch.tensor([1, 22557, 1526])) == "Hello world"
    assert bpe.decode(torch.tensor([22557, 1526])) == "Hello world"
    for t in (tok, bpe):
        with pytest.raises(TypeError, match="position 1"):
            t.decode([22557, 1.5])
    with pytest.raises(ValueError, match="id 40000"):
        tok.id_to_piece(40000)


# --------------------------------------------------------------------------------------
# Loading files
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Tokenizer, BPETokenizer])
def test_from_file_roundtrip(tmp_path, cls):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(mistral_v1_model_bytes())
    t = cls.from_file(path)
    assert t.vocab_size == 32000
    assert t.decode(t.encode("Hello world")) == "Hello world"
    assert cls.from_file(str(path)).vocab_size == 32000


@pytest.mark.parametrize("cls", [Tokenizer, BPETokenizer])
def test_from_file_missing(tmp_path, cls):
    path = tmp_path / "nope" / "tokenizer.model"
    with pytest.raises(FileNotFoundError, match="nope"):
        cls.from_file(path)


@pytest.mark.parametrize("cls", [Tokenizer, BPETokenizer])
@pytest.mark.parametrize(
    "content",
    [b"this is a text file, not a model\n", random.Random(0).randbytes(4096), b""],
    ids=["text", "random_bytes", "empty"],
)
def test_from_file_not_a_model(tmp_path, cls, content):
    path = tmp_path / "bogus.model"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bogus.model"):
        cls.from_file(path)


@pytest.mark.parametrize("cls", [Tokenizer, BPETokenizer])
def test_from_file_directory(tmp_path, cls):
    with pytest.raises(ValueError, match=r"tokenizer model file is not a regular file \(it is a directory\)"):
        cls.from_file(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="POSIX special files")
@pytest.mark.parametrize("cls", [Tokenizer, BPETokenizer])
def test_from_file_special_files(tmp_path, cls):
    """A FIFO is not waited on and /dev/zero is not read forever: both are refused, saying what they are."""
    os.mkfifo(tmp_path / "pipe.model")
    os.symlink("/dev/zero", tmp_path / "zero.model")
    for name, kind in (("pipe.model", r"a FIFO \(named pipe\)"), ("zero.model", "a character device")):
        with pytest.raises(ValueError, match=rf"{name}: tokenizer model file is not a regular file \(it is {kind}\)"):
            cls.from_file(tmp_path / name)


def test_bpe_refuses_unsupported_models():
    # Mistral's later tokenizers (v3) have USER_DEFINED pieces; the teaching BPE says so loudly
    v3_model = importlib.resources.files("mistral_common") / "data" / "mistral_instruct_tokenizer_240323.model.v3"
    data = v3_model.read_bytes()
    with pytest.raises(NotImplementedError, match="USER_DEFINED"):
        BPETokenizer.from_bytes(data, "v3")


# --------------------------------------------------------------------------------------
# Chat format (mistral_common v1)
# --------------------------------------------------------------------------------------


def U(content):
    return {"role": "user", "content": content}


def A(content):
    return {"role": "assistant", "content": content}


def S(content):
    return {"role": "system", "content": content}


CONVERSATIONS = {
    "single_turn": [U("Hello")],
    "multi_turn": [U("What is 2+2?"), A("4"), U("And 3+3?"), A("6."), U("Thanks!")],
    "system": [S("Be brief."), U("Hi")],
    "two_systems": [S("You are a pirate."), S("Answer in French."), U("x"), A("y"), U("z")],
    "system_after_user": [U("first"), S("late system"), A("ok"), U("second")],
    "empty_system": [S(""), U("hi")],
    "whitespace_content": [U("  spaced  \n"), A("  answer with spaces \n"), U("\tq ")],
    "whitespace_system": [S("  "), U("q")],
    "empty_user": [U("")],
    "empty_users": [U(""), A("a"), U("")],
    "unicode": [U("héllo 中文 🤖 👨‍👩‍👧"), A("réponse ✓"), U("日本語?")],
    "markers_in_content": [U("[INST] nested [/INST] </s>"), A("<s>"), U("ok")],
    "multiline": [U("Write code:\n```python\nprint(1)\n```"), A("```python\nprint(2)\n```"), U("More")],
}


@pytest.mark.parametrize("name", list(CONVERSATIONS))
def test_encode_chat_matches_mistral_common(tok, mistral_common_v1, name):
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    messages = CONVERSATIONS[name]
    expected = mistral_common_v1.encode_chat_completion(ChatCompletionRequest(messages=messages)).tokens
    assert tok.encode_chat(messages) == expected


def test_encode_chat_layout(tok):
    ids = tok.encode_chat([U("What is 2+2?"), A("4"), U("And 3+3?")])
    assert ids == (
        [1]
        + tok.encode("[INST] What is 2+2? [/INST]", bos=False)
        + tok.encode("4", bos=False, eos=True)
        + tok.encode("[INST] And 3+3? [/INST]", bos=False)
    )
    # [INST] is plain text in v1 (several pieces, each user turn starting with the dummy '▁')
    assert [tok.id_to_piece(i) for i in ids[:5]] == ["<s>", "▁[", "INST", "]", "▁What"]
    assert ids.count(tok.eos_id) == 1
    # the system prompt is glued to the FIRST user message with a blank line
    assert tok.encode_chat([S("sys"), U("q"), A("a"), U("r")]) == tok.encode_chat([U("sys\n\nq"), A("a"), U("r")])


def test_format_chat():
    text = format_chat([S("sys"), U("q1"), A("a1"), U("q2")])
    assert text == "<s>[INST] sys\n\nq1 [/INST] a1</s>[INST] q2 [/INST]"


BAD_CONVERSATIONS = [
    ([], "empty"),
    ([{"role": "tool", "content": "x"}], r"message 0.*'tool'"),
    ([U("x"), {"role": "User", "content": "y"}], r"message 1.*'User'"),
    ([A("x"), U("y")], r"message 0.*'assistant'"),
    ([U("x"), U("y")], r"message 1.*'user'"),
    ([U("x"), A("y"), A("z"), U("w")], r"message 2.*'assistant'"),
    ([U("x"), A("y")], r"message 1.*'assistant'.*last"),
    ([S("only system")], "no user message"),
    ([U("x"), A("y"), S("mid"), U("z")], r"message 2.*'system'"),
    ([U("x"), A(""), U("z")], r"message 1.*'assistant'.*empty"),
    ([U(None)], r"message 0.*'user'.*str"),
    ([U("x"), A(["list"]), U("z")], r"message 1.*'assistant'.*str"),
    ([U("x"), "not a dict"], r"message 1"),
    ([{"content": "no role"}], r"message 0"),
    ("a string", "list"),
]


@pytest.mark.parametrize("messages, match", BAD_CONVERSATIONS)
def test_encode_chat_errors(tok, messages, match):
    with pytest.raises(ChatFormatError, match=match) as info:
        tok.encode_chat(messages)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "messages",
    [[], [U("x"), A("y")], [U("x"), A("y"), S("mid"), U("z")]],
    ids=["empty", "ends_with_assistant", "system_after_assistant"],
)
def test_mistral_common_rejects_the_same(mistral_common_v1, messages):
    """The conversations we reject for structure are rejected by mistral_common too."""
    from mistral_common.exceptions import MistralCommonException
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    with pytest.raises((MistralCommonException, ValueError)):
        mistral_common_v1.encode_chat_completion(ChatCompletionRequest(messages=messages))


# --------------------------------------------------------------------------------------
# Issue 12: malformed models, surrogates in chat, bools as ids, the package split
# --------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, value) -> bytes:
    """One protobuf field: an int (varint), a float (32-bit) or bytes (length-delimited)."""
    if isinstance(value, bool) or isinstance(value, int):
        return _varint(number << 3) + _varint(int(value))
    if isinstance(value, float):
        return _varint(number << 3 | 5) + struct.pack("<f", value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _model_bytes(edit_pieces=None, byte_fallback=None) -> bytes:
    """Mistral's tokenizer.model re-serialized with its pieces edited (a list of [text, score, type])."""
    pieces, rest = [], b""
    for number, value in _iter_fields(mistral_v1_model_bytes()):
        if number == 1:
            fields = dict(_iter_fields(value))
            pieces.append([fields.get(1, b"").decode(), fields.get(2, 0.0), fields.get(3, 1)])
        elif number == 2 and byte_fallback is not None:
            trainer = [(n, v) for n, v in _iter_fields(value) if n != 35] + [(35, int(byte_fallback))]
            rest += _field(2, b"".join(_field(n, v) for n, v in trainer))
        else:
            rest += _field(number, value)
    if edit_pieces is not None:
        edit_pieces(pieces)
    body = b"".join(_field(1, _field(1, t.encode()) + _field(2, float(sc)) + _field(3, k)) for t, sc, k in pieces)
    return body + rest


def _set(i, **changes):
    def edit(pieces):
        text, score, kind = pieces[i]
        pieces[i] = [changes.get("text", text), score, changes.get("kind", kind)]
    return edit


MALFORMED = {
    "empty piece": (dict(edit_pieces=_set(1000, text="")), r"piece 1000 is empty"),
    "duplicate piece": (dict(edit_pieces=lambda p: p.__setitem__(1001, [p[1000][0], -5.0, 1])),
                        r"piece 1001 \('.+'\) is already defined as piece 1000"),
    "invalid byte piece": (dict(edit_pieces=_set(3, text="<0xZZ>")),
                           r"piece 3 \('<0xZZ>'\) is marked BYTE but is not of the form <0x00>..<0xFF>"),
    "lower-case byte piece": (dict(edit_pieces=_set(13, text="<0x0a>")), r"piece 13 \('<0x0a>'\) is marked BYTE"),
    "no byte pieces with byte_fallback on": (dict(edit_pieces=lambda p: p.__delitem__(slice(3, 259))),
                                             r"byte_fallback is on but only 0 of the 256 byte pieces exist"),
    "a byte piece with byte_fallback off": (dict(byte_fallback=False),
                                            r"piece 3 \('<0x00>'\) is a byte piece, but byte_fallback is off"),
    "two <unk>": (dict(edit_pieces=_set(1000, kind=2)), r"piece 1000 \('.+'\) is a second <unk>"),
    "NUL in a piece": (dict(edit_pieces=_set(1000, text="a\0b")), r"piece 1000 \('a\\x00b'\) contains a NUL"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_bpe_refuses_what_sentencepiece_refuses(case):
    """Each of these models is refused by sentencepiece when it loads; BPETokenizer refuses it too,
    naming the piece (it used to accept them and fail later with a bare KeyError on encode)."""
    kwargs, message = MALFORMED[case]
    data = _model_bytes(**kwargs)
    with pytest.raises(RuntimeError):
        spm.SentencePieceProcessor(model_proto=data)
    with pytest.raises(ValueError, match=rf"'bad.model' is not a valid sentencepiece model: {message}"):
        BPETokenizer.from_bytes(data, "bad.model")
    with pytest.raises(ValueError, match="'bad.model' is not a sentencepiece model"):
        Tokenizer.from_bytes(data, "bad.model")


def test_the_encoder_of_these_tests_keeps_the_model(sp):
    """Unedited, the re-serialized model is Mistral's (so only the edits make the models above bad)."""
    data = _model_bytes()
    assert parse_model_proto(data) == parse_model_proto(mistral_v1_model_bytes())
    text = "Hello world, ✓ 中文\t🤖"
    assert spm.SentencePieceProcessor(model_proto=data).encode(text) == sp.encode(text)
    assert BPETokenizer.from_bytes(data).encode(text) == sp.encode(text)


def test_encode_chat_names_the_message_with_a_surrogate(tok):
    with pytest.raises(ChatFormatError, match=r"message 2 \(role 'user'\): content is not valid Unicode "
                                              r"\(lone surrogate at position 4\)"):
        tok.encode_chat([U("fine"), A("also fine"), U("bad \ud800 text")])
    with pytest.raises(ChatFormatError, match=r"message 0 \(role 'system'\): content is not valid Unicode"):
        format_chat([S("\udfff"), U("q")])


def test_decode_rejects_bool_ids(tok, bpe):
    import torch

    for t in (tok, bpe):
        for ids in ([1, True], torch.tensor([False, True])):
            with pytest.raises(TypeError, match=r"id at position \d is a bool, not a token id"):
                t.decode(ids)
        with pytest.raises(TypeError, match="is a bool"):
            t.id_to_piece(True)


def test_the_tokenizer_package_exports_its_public_names_only():
    import mistral_nb.tokenizer as t

    assert set(t.__all__) == {"SPACE", "PieceType", "ModelSpec", "parse_model_proto", "check_pieces",
                              "mistral_v1_model_bytes", "ChatFormatError", "format_chat", "Tokenizer", "BPETokenizer"}
    assert [n for n in dir(t) if n.startswith("_") and not n.startswith("__")] == []


def test_decode_continuation_keeps_the_space_the_first_new_piece_carries():
    tok = Tokenizer.mistral_v1()
    prompt = tok.encode("Files are written and", bos=True)
    new = tok.encode("Sync is called", bos=False)
    assert tok.decode(new) == "Sync is called"                          # alone: the leading space is dropped
    assert tok.decode_continuation(new, prompt) == " Sync is called"    # after its prompt: kept
    assert tok.decode(prompt) + tok.decode_continuation(new, prompt) == tok.decode(prompt + new)
    assert tok.decode_continuation(new, []) == "Sync is called"         # at the start of a text: no space
    assert tok.decode_continuation([], prompt) == ""
    emoji = tok.encode("x 🦙", bos=False)                               # byte-fallback pieces
    for cut in range(1, len(emoji)):
        head, tail = emoji[:cut], emoji[cut:]
        whole = tok.decode(head + tail)
        assert whole.endswith(tok.decode_continuation(tail, head))
    with pytest.raises(ValueError, match="out of range"):
        tok.decode_continuation([40_000], prompt)
