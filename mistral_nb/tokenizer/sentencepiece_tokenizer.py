"""The production tokenizer: Mistral's ``tokenizer.model`` run by the ``sentencepiece`` C++ library.

Fast; used by the rest of the package. :meth:`Tokenizer.encode_chat` adds the v1 chat format
(see :mod:`.chat`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sentencepiece as spm

from .chat import _chat_turns
from .checks import _check_flag, _check_ids, _check_path, _check_piece, _check_text
from .model_file import _read_model_file, mistral_v1_model_bytes

__all__ = ["Tokenizer"]


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
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"{source!r}: a serialized model must be bytes, got {type(data).__name__}")
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
        return cls.from_bytes(_read_model_file(_check_path(path)), source=str(path))

    @classmethod
    def mistral_v1(cls) -> Tokenizer:
        """The Mistral 7B v0.1 tokenizer (32,000 pieces) shipped inside ``mistral_common``."""
        return cls.from_bytes(mistral_v1_model_bytes(), source="mistral_common/data/tokenizer.model.v1")

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Text -> ids, with ``<s>`` in front if ``bos`` and ``</s>`` at the end if ``eos``."""
        ids: list[int] = self.sp.encode(_check_text(text))
        bos, eos = _check_flag("bos", bos), _check_flag("eos", eos)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. Control ids (``<s>``, ``</s>``) decode to nothing."""
        return self.sp.decode(_check_ids(ids, self.vocab_size))

    def decode_continuation(self, new_ids: Iterable[int], prompt_ids: Iterable[int]) -> str:
        """The text ``new_ids`` add after ``prompt_ids``, as it reads after the prompt.

        ``decode`` alone drops the space a first piece carries (sentencepiece removes the leading
        ``'▁'`` of a text: ``'▁Sync'`` decodes to ``'Sync'``), so ``prompt + decode(new)`` would read
        "andSync". Decoded after the prompt it keeps it: the whole sequence is decoded and the
        prompt's text cut off (up to the first character where they differ, should a byte-fallback
        character straddle the boundary)."""
        prompt_ids = _check_ids(prompt_ids, self.vocab_size)
        new_ids = _check_ids(new_ids, self.vocab_size)
        head, whole = self.sp.decode(prompt_ids), self.sp.decode(prompt_ids + new_ids)
        if whole.startswith(head):
            return whole[len(head):]
        return whole[len(os.path.commonprefix([head, whole])):]

    def pieces(self, text: str) -> list[str]:
        """The pieces of ``text`` (no BOS), e.g. ``['▁Hello', '▁world']``."""
        return self.sp.encode(_check_text(text), out_type=str)

    def id_to_piece(self, token_id: int) -> str:
        """The vocabulary string of an id, e.g. 22557 -> ``'▁Hello'``, 1 -> ``'<s>'``."""
        return self.sp.id_to_piece(_check_ids([token_id], self.vocab_size)[0])

    def piece_to_id(self, piece: str) -> int:
        """The id of a vocabulary string; like sentencepiece, unknown strings give ``unk_id`` (0)."""
        return self.sp.piece_to_id(_check_piece(piece))

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
