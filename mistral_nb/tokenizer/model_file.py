"""The ``.model`` file: where Mistral's ships, reading it safely, and a protobuf reader written by hand.

``tokenizer.model`` is a serialized sentencepiece ``ModelProto``: a list of pieces (text, score,
type), a ``TrainerSpec`` and a ``NormalizerSpec``. :func:`parse_model_proto` decodes the few fields
the tokenizers need into a :class:`ModelSpec` and refuses, as sentencepiece does when it loads a
model (:func:`check_pieces`), a vocabulary it could not use: an empty or over-long piece, a piece
defined twice, no or two ``<unk>``, a malformed byte piece, or ``byte_fallback`` without all 256
byte pieces.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

from ..checkpoint.files import read_regular_file

__all__ = ["PieceType", "ModelSpec", "parse_model_proto", "check_pieces", "mistral_v1_model_bytes"]

MAX_MODEL_BYTES = 64_000_000  # Mistral's v1 model is 0.5 MB; the largest sentencepiece models are a few MB

_MISTRAL_V1_PACKAGE = "mistral_common"
_MISTRAL_V1_RESOURCE = ("data", "tokenizer.model.v1")


def mistral_v1_model_bytes() -> bytes:
    """Return the bytes of Mistral 7B v0.1's ``tokenizer.model`` shipped in ``mistral_common``."""
    resource = importlib.resources.files(_MISTRAL_V1_PACKAGE)
    for part in _MISTRAL_V1_RESOURCE:
        resource = resource / part
    return resource.read_bytes()


def _read_model_file(path: str | os.PathLike[str]) -> bytes:
    """Read a ``.model`` file, raising FileNotFoundError / ValueError that name the path.

    Only a regular file of at most MAX_MODEL_BYTES is read: a FIFO or ``/dev/zero`` is refused, not
    waited on or read forever."""
    return read_regular_file(path, MAX_MODEL_BYTES, "tokenizer model file", ValueError)


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


MAX_PIECE_BYTES = 8000  # sentencepiece: "piece is too long"
_BYTE_PIECE = re.compile(r"<0x([0-9A-F]{2})>")  # exactly sentencepiece's "<0x%02X>"
_NORMAL_GROUP = (PieceType.NORMAL, PieceType.USER_DEFINED, PieceType.UNUSED)


def check_pieces(spec: ModelSpec, source: str = "<bytes>") -> None:
    """Raise ValueError naming ``source`` and the piece for a vocabulary sentencepiece refuses to load.

    The rules of sentencepiece's ``ModelInterface::InitializePieces``: no piece empty, containing NUL
    or of 8000 bytes or more; no piece twice among the NORMAL/USER_DEFINED/UNUSED pieces, nor twice
    among the others (CONTROL, UNKNOWN, BYTE); exactly one UNKNOWN; BYTE pieces only with
    ``byte_fallback``, each spelled ``<0xNN>`` (two upper-case hex digits); with ``byte_fallback``
    all 256 of them.
    """
    def refuse(reason: str) -> ValueError:
        return ValueError(f"{source!r} is not a valid sentencepiece model: {reason}")

    seen: tuple[dict[str, int], dict[str, int]] = ({}, {})
    unk, byte_values = -1, set()
    for i, (piece, kind) in enumerate(zip(spec.pieces, spec.types)):
        if not piece:
            raise refuse(f"piece {i} is empty")
        if "\0" in piece:
            raise refuse(f"piece {i} ({piece!r}) contains a NUL character")
        if len(piece.encode("utf-8")) >= MAX_PIECE_BYTES:
            raise refuse(f"piece {i} is {len(piece.encode('utf-8'))} bytes long (the limit is {MAX_PIECE_BYTES - 1})")
        group = seen[0] if kind in _NORMAL_GROUP else seen[1]
        if piece in group:
            raise refuse(f"piece {i} ({piece!r}) is already defined as piece {group[piece]}")
        group[piece] = i
        if kind == PieceType.UNKNOWN:
            if unk >= 0:
                raise refuse(f"piece {i} ({piece!r}) is a second <unk> (piece {unk} is one already)")
            unk = i
        elif kind == PieceType.BYTE:
            if not spec.byte_fallback:
                raise refuse(f"piece {i} ({piece!r}) is a byte piece, but byte_fallback is off")
            match = _BYTE_PIECE.fullmatch(piece)
            if match is None:
                raise refuse(f"piece {i} ({piece!r}) is marked BYTE but is not of the form <0x00>..<0xFF>")
            byte_values.add(int(match.group(1), 16))
    if unk < 0:
        raise refuse("no <unk> piece")
    if spec.byte_fallback and len(byte_values) != 256:
        missing = min(set(range(256)) - byte_values)
        raise refuse(f"byte_fallback is on but only {len(byte_values)} of the 256 byte pieces exist "
                     f"(e.g. <0x{missing:02X}> is missing)")


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
    check_pieces(spec, source)
    return spec
