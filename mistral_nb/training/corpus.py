"""The English corpora of chapter 12, and a token stream to train and evaluate on.

Two corpora ship in the repository, each built by a pinned script next to it (sources and licences
in its README): ``v1`` (``experiments/corpus``: State of the Union addresses, Python and Rust
documentation; splits ``train``, ``val``) and ``v2`` (``experiments/corpus_v2``: a broader mix of
modern English; splits ``train``, ``val`` and ``ood``, a held-out set from sources that are in no
training document). Each split is documents of plain English prose separated by a line holding
only ``DOC_SEP``, compressed with xz. The splits are by document and fixed.

A ``TokenStream`` is the whole split tokenized with Mistral's tokenizer, one document after the
other, each as ``<s> tokens </s>``: a 1-D LongTensor of ids. Training draws random windows of
S + 1 consecutive ids from it (``batches``); evaluation walks it in consecutive windows (``windows``),
so every id but the first is predicted exactly once.
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..book.results import MAX_DOWNLOAD_BYTES, recorded_path
from ..checkpoint.files import read_regular_file
from .checks import as_count, check_id_tensor

__all__ = ["DOC_SEP", "CORPORA", "load_documents", "document_sources", "TokenStream"]

DOC_SEP = "\x1e"
CORPORA = {"v1": ("experiments/corpus", ("train", "val")),
           "v2": ("experiments/corpus_v2", ("train", "val", "ood"))}


def load_documents(split: str = "train", limit: Optional[int] = None, corpus: str = "v1") -> list[str]:
    """The documents of ``split`` of ``corpus`` ('v1': train, val; 'v2': train, val, ood), read from
    the checkout (or fetched once); the first ``limit`` of them if given."""
    if corpus not in CORPORA:
        raise ValueError(f"load_documents: corpus must be one of {sorted(CORPORA)}, got {corpus!r}")
    folder, splits = CORPORA[corpus]
    if split not in splits:
        raise ValueError(f"load_documents: corpus {corpus!r} has the splits {list(splits)}, not {split!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"load_documents: limit must be None or an int >= 0, got {limit!r}")
    path = recorded_path(f"{folder}/{split}.txt.xz")
    try:
        text = lzma.decompress(read_regular_file(path, MAX_DOWNLOAD_BYTES, "corpus file")).decode("utf-8")
    except (lzma.LZMAError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not an xz-compressed UTF-8 corpus file ({type(e).__name__}: {e}); "
                         "delete it to fetch it again, or rebuild it with the script next to it") from None
    docs = [d.strip("\n") for d in text.split(f"\n{DOC_SEP}\n")]
    docs = [d for d in docs if d]
    return docs[:limit] if limit is not None else docs


def document_sources(split: str, corpus: str = "v2") -> list[str]:
    """The source (e.g. 'postgresql-docs') of every document of ``split``, in the order
    ``load_documents`` returns them, from the corpus's manifest (v2 only: v1's sources are the
    prefixes of its document names)."""
    import json

    if corpus != "v2":
        raise ValueError(f"document_sources: only corpus 'v2' has a manifest of sources, not {corpus!r}")
    folder, splits = CORPORA[corpus]
    if split not in splits:
        raise ValueError(f"document_sources: corpus {corpus!r} has the splits {list(splits)}, not {split!r}")
    path = recorded_path(f"{folder}/manifest.json")
    try:
        manifest = json.loads(read_regular_file(path, MAX_DOWNLOAD_BYTES, "corpus manifest").decode("utf-8"))
        return [name for name, src in manifest["sources"].items() for _ in range(src["documents"][split])]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a corpus manifest ({type(e).__name__}: {e})") from None


@dataclass
class TokenStream:
    """Token ids of many documents in one row. ids: (N,) int64; bos/eos: the ids framing documents."""

    ids: torch.Tensor
    bos: int = 1
    eos: int = 2

    def __post_init__(self):
        check_id_tensor("TokenStream", "ids", self.ids, None, dims=(1,), min_len=0)
        self.bos, self.eos = as_count("TokenStream", "bos", self.bos, 0), as_count("TokenStream", "eos", self.eos, 0)

    @classmethod
    def from_documents(cls, docs: Sequence[str], tokenizer) -> "TokenStream":
        """Tokenize each document as ``<s> ... </s>`` and concatenate."""
        if isinstance(docs, (str, bytes)):
            raise TypeError("TokenStream.from_documents takes a list of documents, not one string "
                            "(wrap it: [text])")
        if not all(hasattr(tokenizer, a) for a in ("encode", "bos_id", "eos_id")):
            raise TypeError(f"TokenStream.from_documents: tokenizer must be a Tokenizer (encode, bos_id, eos_id), "
                            f"got {type(tokenizer).__name__}")
        ids: list[int] = []
        for i, d in enumerate(docs):
            if not isinstance(d, str):
                raise TypeError(f"document {i} is a {type(d).__name__}, not a str")
            ids += tokenizer.encode(d, bos=True, eos=True)
        return cls(torch.tensor(ids, dtype=torch.long), bos=tokenizer.bos_id, eos=tokenizer.eos_id)

    def __len__(self) -> int:
        return int(self.ids.numel())

    def _check(self, seq_len: int, batch_size: Optional[int] = None, generator=None) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
        if batch_size is not None:
            as_count("TokenStream", "batch_size", batch_size)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"TokenStream: generator must be a torch.Generator or None, got {type(generator).__name__}")
        if len(self) < seq_len + 1:
            raise ValueError(f"the stream holds {len(self)} tokens, fewer than one window of seq_len + 1 = {seq_len + 1}")

    def sample(self, batch_size: int, seq_len: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(batch_size, seq_len + 1) windows starting at uniformly random offsets."""
        self._check(seq_len, batch_size, generator)
        starts = torch.randint(0, len(self) - seq_len, (batch_size,), generator=generator)
        return self.ids[starts[:, None] + torch.arange(seq_len + 1)]

    def batches(self, batch_size: int, seq_len: int):
        """A ``train`` batch function: random windows, shifted into (inputs, targets), ``<s>`` unscored."""
        from .loop import shift_targets

        self._check(seq_len, batch_size)

        def fn(generator: torch.Generator):
            return shift_targets(self.sample(batch_size, seq_len, generator), ignore_ids=(self.bos,))
        return fn

    def windows(self, seq_len: int, max_windows: Optional[int] = None) -> torch.Tensor:
        """Consecutive (n, seq_len + 1) windows overlapping by one id: every id after the first is a
        target exactly once (a last partial window is dropped)."""
        self._check(seq_len)
        n = (len(self) - 1) // seq_len
        if max_windows is not None:
            n = min(n, as_count("TokenStream.windows", "max_windows", max_windows))
        starts = torch.arange(n) * seq_len
        return self.ids[starts[:, None] + torch.arange(seq_len + 1)]
