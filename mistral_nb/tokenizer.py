"""Mistral 7B v0.1 tokenizer: sentencepiece BPE, the chat format, and a from-scratch copy.

Mistral 7B v0.1 reads text as integer ids from a vocabulary of 32,000 *pieces*.
The vocabulary and the rules for cutting text into pieces live in one small file,
``tokenizer.model``, a serialized sentencepiece ``ModelProto`` (a protobuf
message). The same file ships inside the ``mistral_common`` wheel as
``mistral_common/data/tokenizer.model.v1``, so no download is needed.

Sentencepiece treats text as a plain sequence of Unicode characters: there is no
pre-tokenizer splitting on spaces or punctuation. Instead, spaces become an
ordinary visible character, ``'▁'`` (U+2581, "LOWER ONE EIGHTH BLOCK"), and one
extra ``'▁'`` is glued to the front of the text (the "dummy prefix"), so that
``"world"`` at the start of a text and ``" world"`` in the middle both begin with
the same piece ``'▁world'``. Mistral's file asks for no other normalization:
no Unicode NFKC, no collapsing of repeated spaces, tabs and newlines are kept.

Encoding is byte-pair encoding (BPE) *at inference time*: start from single
characters, then repeatedly merge the adjacent pair whose concatenation is a
piece of the vocabulary with the highest score (ties go to the leftmost pair),
until no adjacent pair forms a vocabulary piece. The score of a piece is just
minus its rank in training, so "highest score" means "learned earliest". One
twist in Mistral's file: all pieces made only of ``'▁'`` (``'▁'``, ``'▁▁'``, ...
up to 16 of them) share the score -1e9, so runs of spaces are merged *last*,
after the words next to them had their chance to take one space as ``'▁word'``.

A character that is not in the vocabulary (most emoji, rare CJK, control
characters like ``'\\t'`` or ``'\\n'``) is not mapped to ``<unk>``: with
``byte_fallback`` on, it is written as its UTF-8 bytes, one piece per byte,
``<0x00>`` ... ``<0xFF>`` (ids 3..258). So every string can be encoded and
decoded back exactly, which is why the model never sees ``<unk>`` (id 0).

Ids 1 and 2 are the control pieces ``<s>`` (BOS, beginning of sequence) and
``</s>`` (EOS). Control pieces cannot be produced by encoding text: the string
``"<s>"`` is encoded as the characters ``<``, ``s``, ``>``. The instruct model
wraps user turns in ``[INST] ... [/INST]``, which in v1 are *ordinary text*,
cut into several pieces like any other words; :meth:`Tokenizer.encode_chat`
reproduces ``mistral_common``'s v1 layout token for token.

This module has two tokenizers with the same ids:

* :class:`Tokenizer` wraps the ``sentencepiece`` C++ library (fast, used by the
  rest of the package), plus the chat format.
* :class:`BPETokenizer` re-implements sentencepiece's BPE encoder and decoder in
  pure Python for teaching: it reads the ``.model`` protobuf itself
  (:func:`parse_model_proto`) and shows every merge (:meth:`BPETokenizer.merge_steps`).
  Its output is tested to be identical to sentencepiece's on any text.
"""

from __future__ import annotations

import heapq
import importlib.resources
import operator
import os
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import sentencepiece as spm

__all__ = [
    "SPACE",
    "PieceType",
    "ModelSpec",
    "parse_model_proto",
    "mistral_v1_model_bytes",
    "ChatFormatError",
    "format_chat",
    "Tokenizer",
    "BPETokenizer",
]

SPACE = "\u2581"  # '▁', sentencepiece's visible stand-in for ' '

# Where the Mistral 7B v0.1 tokenizer lives inside the mistral_common package.
_MISTRAL_V1_PACKAGE = "mistral_common"
_MISTRAL_V1_RESOURCE = ("data", "tokenizer.model.v1")


def mistral_v1_model_bytes() -> bytes:
    """Return the bytes of Mistral 7B v0.1's ``tokenizer.model`` shipped in ``mistral_common``."""
    resource = importlib.resources.files(_MISTRAL_V1_PACKAGE)
    for part in _MISTRAL_V1_RESOURCE:
        resource = resource / part
    return resource.read_bytes()


def _read_model_file(path: str | os.PathLike[str]) -> bytes:
    """Read a ``.model`` file, raising FileNotFoundError / ValueError that name the path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"tokenizer model file not found: {str(path)!r}")
    if not path.is_file():
        raise ValueError(f"tokenizer model path is not a file: {str(path)!r}")
    return path.read_bytes()


# ---------------------------------------------------------------------------------
# Part 1. Reading the .model file: a protobuf, decoded by hand.
# ---------------------------------------------------------------------------------


class PieceType(IntEnum):
    """``ModelProto.SentencePiece.Type`` from sentencepiece_model.proto."""

    NORMAL = 1  # learned subword; the only kind BPE merges can produce in Mistral's file
    UNKNOWN = 2  # <unk>
    CONTROL = 3  # <s>, </s>: never produced from text, decode to ""
    USER_DEFINED = 4  # always kept whole (not used by Mistral v0.1)
    UNUSED = 5  # may be merged into, then split again (not used by Mistral v0.1)
    BYTE = 6  # <0x00> .. <0xFF>, the byte fallback


@dataclass
class ModelSpec:
    """What the tokenizer needs from a sentencepiece ``ModelProto``.

    Defaults are the proto's own defaults, used when a field is absent from the file.
    """

    pieces: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    types: list[PieceType] = field(default_factory=list)
    # TrainerSpec
    model_type: int = 1  # 1 = UNIGRAM, 2 = BPE, 3 = WORD, 4 = CHAR
    byte_fallback: bool = False
    treat_whitespace_as_suffix: bool = False
    unk_surface: str = " \u2047 "  # what <unk> decodes to: ' ⁇ '
    unk_piece: str = "<unk>"
    bos_piece: str = "<s>"
    eos_piece: str = "</s>"
    # NormalizerSpec
    normalizer_name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a protobuf base-128 varint starting at ``pos``; return (value, new_pos)."""
    value, shift = 0, 0
    while True:
        byte = buf[pos]  # IndexError on truncated input, turned into ValueError by the caller
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos
        if shift > 63:
            raise ValueError("varint too long")


def _iter_fields(buf: bytes) -> Iterable[tuple[int, int | float | bytes]]:
    """Yield ``(field_number, value)`` for each field of a serialized protobuf message.

    Only the wire types a ModelProto uses are supported: varint (0), 64-bit (1),
    length-delimited (2: strings, bytes, sub-messages) and 32-bit float (5).
    """
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
        elif wire_type == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire_type == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire_type == 5:
            (value,), pos = struct.unpack("<f", buf[pos : pos + 4]), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        if pos > len(buf):
            raise ValueError("truncated protobuf message")
        yield number, value


# Field numbers from sentencepiece_model.proto.
_MODEL_PIECES, _MODEL_TRAINER_SPEC, _MODEL_NORMALIZER_SPEC = 1, 2, 3
_PIECE_TEXT, _PIECE_SCORE, _PIECE_TYPE = 1, 2, 3
_TRAINER_FIELDS = {  # field number -> (ModelSpec attribute, converter)
    3: ("model_type", int),
    24: ("treat_whitespace_as_suffix", bool),
    35: ("byte_fallback", bool),
    44: ("unk_surface", lambda b: b.decode("utf-8")),
    45: ("unk_piece", lambda b: b.decode("utf-8")),
    46: ("bos_piece", lambda b: b.decode("utf-8")),
    47: ("eos_piece", lambda b: b.decode("utf-8")),
}
_NORMALIZER_FIELDS = {
    1: ("normalizer_name", lambda b: b.decode("utf-8")),
    2: ("precompiled_charsmap", bytes),
    3: ("add_dummy_prefix", bool),
    4: ("remove_extra_whitespaces", bool),
    5: ("escape_whitespaces", bool),
}


def parse_model_proto(data: bytes, source: str = "<bytes>") -> ModelSpec:
    """Parse a serialized sentencepiece ``ModelProto`` into a :class:`ModelSpec`.

    Raises ValueError naming ``source`` if ``data`` is not a sentencepiece model.
    """
    spec = ModelSpec()
    try:
        for number, value in _iter_fields(data):
            if number == _MODEL_PIECES:
                text, score, kind = "", 0.0, PieceType.NORMAL
                for sub, sub_value in _iter_fields(value):
                    if sub == _PIECE_TEXT:
                        text = sub_value.decode("utf-8")
                    elif sub == _PIECE_SCORE:
                        score = float(sub_value)
                    elif sub == _PIECE_TYPE:
                        kind = PieceType(sub_value)
                spec.pieces.append(text)
                spec.scores.append(score)
                spec.types.append(kind)
            elif number in (_MODEL_TRAINER_SPEC, _MODEL_NORMALIZER_SPEC):
                table = _TRAINER_FIELDS if number == _MODEL_TRAINER_SPEC else _NORMALIZER_FIELDS
                for sub, sub_value in _iter_fields(value):
                    if sub in table:
                        name, convert = table[sub]
                        setattr(spec, name, convert(sub_value))
    except (ValueError, IndexError, TypeError, AttributeError, struct.error) as err:
        raise ValueError(f"{source!r} is not a sentencepiece model: {err}") from err
    if not spec.pieces or PieceType.UNKNOWN not in spec.types:
        raise ValueError(f"{source!r} is not a sentencepiece model: no vocabulary / no <unk> piece")
    return spec


# ---------------------------------------------------------------------------------
# Part 2. The chat format of Mistral 7B Instruct v0.1 (mistral_common's "v1").
# ---------------------------------------------------------------------------------


class ChatFormatError(ValueError):
    """A conversation that the v1 chat format cannot encode."""


_ROLES = ("system", "user", "assistant")


def _chat_turns(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, bool]]:
    """Validate a conversation and lay it out as ``(text, ends_with_eos)`` segments.

    The v1 layout, as in ``mistral_common`` (InstructRequestNormalizer + InstructTokenizerV1)::

        <s>[INST] {user} [/INST] {assistant}</s>[INST] {user} [/INST] ...

    * each segment is encoded *separately*, so each gets its own dummy-prefix '▁':
      the user segment is the text ``"[INST] " + content + " [/INST]"`` (pieces
      ``'▁['``, ``'INST'``, ``']'``, ...), the assistant segment is its content
      (hence the space shown before it), followed by the control id ``</s>``;
    * contents are used verbatim: no stripping of leading/trailing whitespace;
    * v1 has no system slot. All non-empty system messages, wherever they are, are
      joined with ``"\\n\\n"`` and put in front of the FIRST user message, again
      separated by ``"\\n\\n"``.

    Rules enforced (ChatFormatError names the message index and role): non-empty
    list; each message a mapping with a known ``role`` and a ``str`` ``content``;
    ignoring system messages, roles alternate user/assistant, starting and ending
    with user; assistant contents are non-empty and no system message directly
    follows an assistant message (mistral_common rejects both too).
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ChatFormatError(f"messages must be a list of dicts, got {type(messages).__name__}")
    if len(messages) == 0:
        raise ChatFormatError("messages is empty: a conversation needs at least one user message")

    system_parts: list[str] = []
    turns: list[tuple[int, str, str]] = []  # (index, role, content) of user/assistant messages
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ChatFormatError(f"message {index} must be a dict with 'role' and 'content' keys, got {message!r}")
        role, content = message["role"], message["content"]
        if role not in _ROLES:
            raise ChatFormatError(f"message {index}: unknown role {role!r} (expected one of {', '.join(_ROLES)})")
        if not isinstance(content, str):
            raise ChatFormatError(
                f"message {index} (role {role!r}): content must be a str, got {type(content).__name__}"
            )
        if role == "system":
            if index > 0 and messages[index - 1]["role"] == "assistant":
                raise ChatFormatError(
                    f"message {index} (role 'system') follows an assistant message; "
                    "system messages may only come first or after a user/system message"
                )
            if content:  # mistral_common drops empty system messages
                system_parts.append(content)
            continue
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise ChatFormatError(
                f"message {index} has role {role!r} but {expected!r} was expected: "
                "after removing system messages, roles must alternate user/assistant/user/..., starting with user"
            )
        if role == "assistant" and not content:
            raise ChatFormatError(f"message {index} (role 'assistant'): content must not be empty")
        turns.append((index, role, content))

    if not turns:
        raise ChatFormatError("the conversation has no user message")
    last_index, last_role, _ = turns[-1]
    if last_role != "user":
        raise ChatFormatError(
            f"message {last_index} (role {last_role!r}) ends the conversation: the last message must be a user message"
        )

    segments: list[tuple[str, bool]] = []
    for position, (_, role, content) in enumerate(turns):
        if role == "user":
            if position == 0 and system_parts:
                content = "\n\n".join(system_parts) + "\n\n" + content
            segments.append((f"[INST] {content} [/INST]", False))
        else:
            segments.append((content, True))
    return segments


def format_chat(messages: Sequence[Mapping[str, Any]]) -> str:
    """Render a conversation as the v1 prompt text, with ``<s>``/``</s>`` shown, for display.

    Do not encode this string: ``<s>`` and ``</s>`` are control ids, not text, and
    every segment must get its own dummy prefix. Use :meth:`Tokenizer.encode_chat`.
    """
    parts = ["<s>"]
    for text, eos in _chat_turns(messages):
        parts.append((" " if eos else "") + text + ("</s>" if eos else ""))
    return "".join(parts)


# ---------------------------------------------------------------------------------
# Part 3. The production tokenizer: sentencepiece (C++), used by the rest of the package.
# ---------------------------------------------------------------------------------


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # lone surrogates such as '\ud800'
        raise ValueError(f"text is not valid Unicode (lone surrogate at position {err.start})") from err
    return text


def _check_ids(ids: Iterable[int], vocab_size: int) -> list[int]:
    """Turn ``ids`` (list, tuple, 1-D tensor/array of ints) into a list, rejecting bad ids."""
    if isinstance(ids, (str, bytes)):
        raise TypeError("ids must be a sequence of ints, not a string")
    checked = []
    for position, token in enumerate(ids):
        try:
            token = operator.index(token)  # int, numpy int or 0-d integer tensor
        except TypeError as err:
            raise TypeError(f"id at position {position} is not an int: {token!r}") from err
        if not 0 <= token < vocab_size:
            raise ValueError(f"id {token} at position {position} is out of range [0, {vocab_size})")
        checked.append(token)
    return checked


class Tokenizer:
    """Mistral's tokenizer backed by the ``sentencepiece`` library.

    >>> tok = Tokenizer.mistral_v1()
    >>> tok.encode("Hello world")
    [1, 22557, 1526]
    >>> tok.decode([1, 22557, 1526])
    'Hello world'
    """

    def __init__(self, processor: spm.SentencePieceProcessor, source: str = "<bytes>") -> None:
        self.sp = processor
        self.source = source
        self.vocab_size: int = processor.vocab_size()
        self.bos_id: int = processor.bos_id()
        self.eos_id: int = processor.eos_id()
        self.unk_id: int = processor.unk_id()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> Tokenizer:
        """Load a serialized sentencepiece model; ValueError naming ``source`` if it is not one."""
        if not data:  # sentencepiece would accept b"" and give an empty, broken model
            raise ValueError(f"{source!r} is not a sentencepiece model: the file is empty")
        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(data)
        except RuntimeError as err:
            raise ValueError(f"{source!r} is not a sentencepiece model ({err})") from err
        if processor.vocab_size() <= 0:
            raise ValueError(f"{source!r} is not a sentencepiece model: empty vocabulary")
        return cls(processor, source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load a ``tokenizer.model`` file.

        Raises FileNotFoundError if ``path`` does not exist and ValueError if it is
        not a sentencepiece model; both messages name the path.
        """
        return cls.from_bytes(_read_model_file(path), source=str(path))

    @classmethod
    def mistral_v1(cls) -> Tokenizer:
        """The Mistral 7B v0.1 tokenizer (32,000 pieces) shipped inside ``mistral_common``."""
        return cls.from_bytes(mistral_v1_model_bytes(), source="mistral_common/data/tokenizer.model.v1")

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Text -> ids, with ``<s>`` in front if ``bos`` and ``</s>`` at the end if ``eos``."""
        ids: list[int] = self.sp.encode(_check_text(text))
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. Control ids (``<s>``, ``</s>``) decode to nothing."""
        return self.sp.decode(_check_ids(ids, self.vocab_size))

    def pieces(self, text: str) -> list[str]:
        """The pieces of ``text`` (no BOS), e.g. ``['▁Hello', '▁world']``."""
        return self.sp.encode(_check_text(text), out_type=str)

    def id_to_piece(self, token_id: int) -> str:
        """The vocabulary string of an id, e.g. 22557 -> ``'▁Hello'``, 1 -> ``'<s>'``."""
        return self.sp.id_to_piece(_check_ids([token_id], self.vocab_size)[0])

    def piece_to_id(self, piece: str) -> int:
        """The id of a vocabulary string; like sentencepiece, unknown strings give ``unk_id`` (0)."""
        return self.sp.piece_to_id(piece)

    def encode_chat(self, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """Encode a conversation in Mistral 7B Instruct v0.1's format (see :func:`_chat_turns`).

        ``messages`` is a list of ``{"role": "system" | "user" | "assistant", "content": str}``.
        The result is identical to ``mistral_common``'s
        ``MistralTokenizer.v1().encode_chat_completion(ChatCompletionRequest(messages=...)).tokens``.
        """
        ids = [self.bos_id]
        for text, ends_turn in _chat_turns(messages):
            ids += self.encode(text, bos=False, eos=ends_turn)
        return ids

    def __repr__(self) -> str:
        return f"Tokenizer(source={self.source!r}, vocab_size={self.vocab_size})"


# ---------------------------------------------------------------------------------
# Part 4. The same BPE, from scratch, in pure Python.
# ---------------------------------------------------------------------------------


def _utf8_length(lead: int) -> int:
    """Length of a UTF-8 character from its first byte (0xxxxxxx, 110xxxxx, 1110xxxx,
    11110xxx), or 0 if the byte cannot start a character."""
    if lead < 0x80:
        return 1
    for length, prefix in ((2, 0b110), (3, 0b1110), (4, 0b11110)):
        if lead >> (7 - length) == prefix:
            return length
    return 0


def _decode_utf8_like_sentencepiece(data: bytes) -> str:
    """Decode bytes one character at a time; each invalid byte becomes one U+FFFD.

    This differs from ``bytes.decode("utf-8", "replace")``, which replaces a whole
    truncated sequence such as ``b"\\xe2\\x82"`` by a single U+FFFD.
    """
    out, pos = [], 0
    while pos < len(data):
        length = _utf8_length(data[pos])
        try:
            if length == 0 or pos + length > len(data):
                raise UnicodeDecodeError("utf-8", data, pos, pos + 1, "invalid start byte or truncated")
            out.append(data[pos : pos + length].decode("utf-8"))  # strict: rejects overlong forms, surrogates
            pos += length
        except UnicodeDecodeError:
            out.append("\ufffd")
            pos += 1
    return "".join(out)


class BPETokenizer:
    """Sentencepiece's BPE encoder and decoder in pure Python (no BOS/EOS added).

    It reads the vocabulary (pieces, scores, types) and the normalization flags
    from the ``.model`` file with :func:`parse_model_proto`, and gives the same ids
    as ``sentencepiece`` for any text. Supports BPE models with an identity
    normalizer, like Mistral 7B v0.1's.

    >>> bpe = BPETokenizer.mistral_v1()
    >>> bpe.pieces("Hello world")
    ['▁Hello', '▁world']
    >>> bpe.encode("Hello world")
    [22557, 1526]
    """

    def __init__(self, spec: ModelSpec, source: str = "<bytes>") -> None:
        self._check_supported(spec, source)
        self.spec = spec
        self.source = source
        self.vocab_size = len(spec.pieces)
        # Only NORMAL pieces can be the result of a merge; <unk>, <s>, </s> and the byte
        # pieces live apart (sentencepiece's `pieces_` vs `reserved_id_map_`), so the text
        # "<s>" can never become the BOS id.
        self.merge_score: dict[str, float] = {}
        self.normal_id: dict[str, int] = {}
        self.byte_id: dict[int, int] = {}  # byte value -> id of '<0xNN>'
        self.piece_id: dict[str, int] = {}  # every piece -> id
        for i, (piece, score, kind) in enumerate(zip(spec.pieces, spec.scores, spec.types)):
            self.piece_id.setdefault(piece, i)
            if kind == PieceType.NORMAL:
                self.merge_score[piece] = score
                self.normal_id[piece] = i
            elif kind == PieceType.BYTE:
                self.byte_id[int(piece[1:-1], 16)] = i
        self.byte_value = {i: b for b, i in self.byte_id.items()}
        self.unk_id = spec.types.index(PieceType.UNKNOWN)
        self.bos_id = self._control_id(spec.bos_piece)
        self.eos_id = self._control_id(spec.eos_piece)

    @staticmethod
    def _check_supported(spec: ModelSpec, source: str) -> None:
        """Fail loudly on sentencepiece features this teaching version leaves out."""
        problems = []
        if spec.model_type != 2:
            problems.append(f"model_type={spec.model_type} (only BPE=2)")
        if spec.precompiled_charsmap:
            problems.append("a Unicode normalization table (only the identity normalizer)")
        if spec.remove_extra_whitespaces or spec.treat_whitespace_as_suffix or not spec.escape_whitespaces:
            problems.append("non-default whitespace options")
        if PieceType.USER_DEFINED in spec.types or PieceType.UNUSED in spec.types:
            problems.append("USER_DEFINED or UNUSED pieces")
        if problems:
            raise NotImplementedError(f"BPETokenizer does not support {source!r}: " + "; ".join(problems))

    def _control_id(self, piece: str) -> int:
        i = self.piece_id.get(piece, -1)
        return i if i >= 0 and self.spec.types[i] == PieceType.CONTROL else -1

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> BPETokenizer:
        return cls(parse_model_proto(data, source), source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Load a ``tokenizer.model`` file (FileNotFoundError / ValueError name the path)."""
        return cls.from_bytes(_read_model_file(path), source=str(path))

    @classmethod
    def mistral_v1(cls) -> BPETokenizer:
        return cls.from_bytes(mistral_v1_model_bytes(), source="mistral_common/data/tokenizer.model.v1")

    def id_to_piece(self, token_id: int) -> str:
        return self.spec.pieces[_check_ids([token_id], self.vocab_size)[0]]

    def piece_to_id(self, piece: str) -> int:
        """Like sentencepiece: a string that is not a piece gives ``unk_id``."""
        return self.piece_id.get(piece, self.unk_id)

    # --- encoding, step 1: normalize ---------------------------------------------

    def normalize(self, text: str) -> str:
        """Apply Mistral's normalizer: dummy prefix + every ' ' (U+0020 only) -> '▁'.

        Nothing else changes: no NFKC, tabs/newlines/'\\r'/NUL stay as they are, runs
        of spaces are kept (``remove_extra_whitespaces`` is off). The empty string
        stays empty (no dummy prefix), but ``" "`` becomes ``"▁▁"``.
        """
        text = _check_text(text)
        if not text:
            return ""
        prefix = SPACE if self.spec.add_dummy_prefix else ""
        return prefix + text.replace(" ", SPACE)

    # --- encoding, step 2: BPE merges --------------------------------------------

    def _merge(self, symbols: list[str], on_merge: Callable[[list[str], list[int]], None] | None = None) -> list[str]:
        """Run BPE on a list of symbols (initially one per character); return the final symbols.

        The symbols form a doubly linked list (``prev``/``next`` indices) so a merge is
        O(1). Candidate pairs wait in a heap ordered by (highest score, then leftmost
        position), exactly sentencepiece's ``SymbolPairComparator``. A merge changes
        the neighbours of the new symbol, so entries in the heap can go stale; they are
        skipped when popped, instead of being searched and removed. Total: O(n log n).
        """
        symbols = list(symbols)  # symbols[i] == "" once it was merged into its left neighbour
        n = len(symbols)
        prev = list(range(-1, n - 1))
        next_ = list(range(1, n + 1))
        if n:
            next_[-1] = -1
        heap: list[tuple[float, int, int, str]] = []

        def push_pair(left: int, right: int) -> None:
            if left == -1 or right == -1:
                return
            merged = symbols[left] + symbols[right]
            score = self.merge_score.get(merged)
            if score is not None:  # only pairs that form a vocabulary piece are candidates
                heapq.heappush(heap, (-score, left, right, merged))

        for i in range(n - 1):
            push_pair(i, i + 1)

        while heap:
            _, left, right, merged = heapq.heappop(heap)
            if not symbols[left] or not symbols[right] or symbols[left] + symbols[right] != merged:
                continue  # stale: one of the two symbols was merged away, or grew, since the push
            symbols[left], symbols[right] = merged, ""
            next_[left] = next_[right]
            if next_[right] != -1:
                prev[next_[right]] = left
            if on_merge is not None:
                on_merge(symbols, next_)
            push_pair(prev[left], left)  # the new symbol may merge with either neighbour
            push_pair(left, next_[left])

        return [s for s in symbols if s]

    # --- encoding, step 3: ids, with byte fallback -------------------------------

    def _symbol_ids(self, symbol: str) -> list[int]:
        """A final symbol -> ids: its vocabulary id, else its UTF-8 bytes as <0xNN> ids."""
        if symbol in self.normal_id:
            return [self.normal_id[symbol]]
        if self.spec.byte_fallback:
            return [self.byte_id[b] for b in symbol.encode("utf-8")]
        return [self.unk_id]

    def encode(self, text: str) -> list[int]:
        """Text -> ids, identical to ``sentencepiece``'s ``encode(text)`` (no BOS/EOS)."""
        ids: list[int] = []
        for symbol in self._merge(list(self.normalize(text))):
            new = self._symbol_ids(symbol)
            if new == [self.unk_id] and ids and ids[-1] == self.unk_id:
                continue  # without byte fallback, sentencepiece merges a run of unknowns into one <unk>
            ids += new
        return ids

    def pieces(self, text: str) -> list[str]:
        """The pieces of ``text``, e.g. ``['▁Hello', '▁world']``; unknown chars as ``'<0xNN>'``."""
        return [self.spec.pieces[i] for i in self.encode(text)]

    def merge_steps(self, text: str) -> list[list[str]]:
        """The symbols before any merge (first entry), then after each merge, in order.

        For figures on short texts (the output grows quadratically with the length).
        Symbols are shown before the byte fallback: an unknown character is one symbol.
        """
        steps = [list(self.normalize(text))]

        def snapshot(symbols: list[str], next_: list[int]) -> None:
            current, i = [], 0  # index 0 is always the head: merges keep the left index
            while i != -1:
                current.append(symbols[i])
                i = next_[i]
            steps.append(current)

        self._merge(steps[0], on_merge=snapshot)
        return steps

    # --- decoding ------------------------------------------------------------------

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text, following sentencepiece's decoder rule by rule.

        * ``<s>``/``</s>`` (control) decode to ``""``; ``<unk>`` to ``' ⁇ '``;
        * '▁' becomes ' ';
        * consecutive byte pieces are gathered and decoded as UTF-8; each byte that
          does not start a valid character becomes one U+FFFD;
        * the dummy prefix: the first '▁' of the first non-byte piece is dropped,
          as long as nothing visible was decoded before it.
        """
        ids = _check_ids(ids, self.vocab_size)
        out: list[str] = []
        pending = bytearray()  # a run of byte pieces, decoded together
        strip_dummy_prefix = self.spec.add_dummy_prefix  # turned off for good once text appeared
        for token in ids:
            if token in self.byte_value:
                pending.append(self.byte_value[token])
                continue
            if pending:
                out.append(_decode_utf8_like_sentencepiece(bytes(pending)))
                pending.clear()
                strip_dummy_prefix = False
            surface, stripped = self._piece_surface(token, strip_dummy_prefix)
            out.append(surface)
            if surface or stripped:
                strip_dummy_prefix = False
        out.append(_decode_utf8_like_sentencepiece(bytes(pending)))
        return "".join(out)

    def _piece_surface(self, token: int, strip_dummy_prefix: bool) -> tuple[str, bool]:
        """The text of one non-byte piece, and whether a dummy-prefix '▁' was dropped."""
        kind = self.spec.types[token]
        if kind == PieceType.CONTROL:
            return "", False
        if kind == PieceType.UNKNOWN:
            return self.spec.unk_surface, False
        piece = self.spec.pieces[token]
        stripped = strip_dummy_prefix and piece.startswith(SPACE)
        if stripped:
            piece = piece[len(SPACE) :]
        return piece.replace(SPACE, " "), stripped

    def __repr__(self) -> str:
        return f"BPETokenizer(source={self.source!r}, vocab_size={self.vocab_size})"
