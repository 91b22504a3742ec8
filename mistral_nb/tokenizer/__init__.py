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

This package has two tokenizers with the same ids:

* :class:`Tokenizer` wraps the ``sentencepiece`` C++ library (fast, used by the
  rest of the package), plus the chat format.
* :class:`BPETokenizer` re-implements sentencepiece's BPE encoder and decoder in
  pure Python for teaching: it reads the ``.model`` protobuf itself
  (:func:`parse_model_proto`) and shows every merge (:meth:`BPETokenizer.merge_steps`).
  Its output is tested to be identical to sentencepiece's on any text.

One module per concept: :mod:`.model_file` (the ``.model`` protobuf and its checks), :mod:`.chat`
(the v1 chat format), :mod:`.sentencepiece_tokenizer` (:class:`Tokenizer`), :mod:`.bpe`
(:class:`BPETokenizer`), and :mod:`.checks` (argument checks both tokenizers share).
"""

from __future__ import annotations

from .bpe import SPACE, BPETokenizer
from .chat import ChatFormatError, format_chat
from .model_file import ModelSpec, PieceType, check_pieces, mistral_v1_model_bytes, parse_model_proto
from .sentencepiece_tokenizer import Tokenizer

__all__ = [
    "SPACE",
    "PieceType",
    "ModelSpec",
    "parse_model_proto",
    "check_pieces",
    "mistral_v1_model_bytes",
    "ChatFormatError",
    "format_chat",
    "Tokenizer",
    "BPETokenizer",
]
