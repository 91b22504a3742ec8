"""Sentencepiece's BPE encoder and decoder re-implemented in pure Python, for teaching.

It reads the vocabulary from the ``.model`` file itself (:func:`.model_file.parse_model_proto`),
shows every merge (:meth:`BPETokenizer.merge_steps`), and gives the same ids as ``sentencepiece`` on
any text (tested). A vocabulary sentencepiece would refuse to load is refused here too.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable, Iterable

from .checks import _check_ids, _check_path, _check_piece, _check_text
from .model_file import ModelSpec, PieceType, _read_model_file, check_pieces, mistral_v1_model_bytes, parse_model_proto

__all__ = ["SPACE", "BPETokenizer"]

SPACE = "\u2581"  # '▁', sentencepiece's visible stand-in for ' '


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
        check_pieces(spec, source)
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
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"{source!r}: a serialized model must be bytes, got {type(data).__name__}")
        return cls(parse_model_proto(bytes(data), source), source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BPETokenizer:
        """Load a ``tokenizer.model`` file (FileNotFoundError / ValueError name the path)."""
        return cls.from_bytes(_read_model_file(_check_path(path)), source=str(path))

    @classmethod
    def mistral_v1(cls) -> BPETokenizer:
        return cls.from_bytes(mistral_v1_model_bytes(), source="mistral_common/data/tokenizer.model.v1")

    def id_to_piece(self, token_id: int) -> str:
        return self.spec.pieces[_check_ids([token_id], self.vocab_size)[0]]

    def piece_to_id(self, piece: str) -> int:
        """Like sentencepiece: a string that is not a piece gives ``unk_id``."""
        return self.piece_id.get(_check_piece(piece), self.unk_id)

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
