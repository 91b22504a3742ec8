"""The English corpus of chapter 12, and a token stream to train and evaluate on.

The corpus (built by ``experiments/corpus/build_corpus.py``, sources and licences in its README)
is shipped in the repository as ``experiments/corpus/{train,val}.txt.xz``: documents of plain
English prose separated by a line holding only ``DOC_SEP``. The split is by document and fixed.

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

from .results import recorded_path

__all__ = ["DOC_SEP", "CORPUS_DIR", "load_documents", "TokenStream"]

DOC_SEP = "\x1e"
CORPUS_DIR = "experiments/corpus"


def load_documents(split: str = "train", limit: Optional[int] = None) -> list[str]:
    """The documents of ``split`` ('train' or 'val'), read from the checkout (or fetched once)."""
    if split not in ("train", "val"):
        raise ValueError(f"load_documents: split must be 'train' or 'val', got {split!r}")
    path = recorded_path(f"{CORPUS_DIR}/{split}.txt.xz")
    text = lzma.decompress(path.read_bytes()).decode("utf-8")
    docs = [d.strip("\n") for d in text.split(f"\n{DOC_SEP}\n")]
    docs = [d for d in docs if d]
    return docs[:limit] if limit is not None else docs


@dataclass
class TokenStream:
    """Token ids of many documents in one row. ids: (N,) int64; bos/eos: the ids framing documents."""

    ids: torch.Tensor
    bos: int = 1
    eos: int = 2

    @classmethod
    def from_documents(cls, docs: Sequence[str], tokenizer) -> "TokenStream":
        """Tokenize each document as ``<s> ... </s>`` and concatenate."""
        ids: list[int] = []
        for d in docs:
            ids += tokenizer.encode(d, bos=True, eos=True)
        return cls(torch.tensor(ids, dtype=torch.long), bos=tokenizer.bos_id, eos=tokenizer.eos_id)

    def __len__(self) -> int:
        return int(self.ids.numel())

    def _check(self, seq_len: int) -> None:
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
        if len(self) < seq_len + 1:
            raise ValueError(f"the stream holds {len(self)} tokens, fewer than one window of seq_len + 1 = {seq_len + 1}")

    def sample(self, batch_size: int, seq_len: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(batch_size, seq_len + 1) windows starting at uniformly random offsets."""
        self._check(seq_len)
        starts = torch.randint(0, len(self) - seq_len, (batch_size,), generator=generator)
        return self.ids[starts[:, None] + torch.arange(seq_len + 1)]

    def batches(self, batch_size: int, seq_len: int):
        """A ``train`` batch function: random windows, shifted into (inputs, targets), ``<s>`` unscored."""
        from .train import shift_targets

        def fn(generator: torch.Generator):
            return shift_targets(self.sample(batch_size, seq_len, generator), ignore_ids=(self.bos,))
        return fn

    def windows(self, seq_len: int, max_windows: Optional[int] = None) -> torch.Tensor:
        """Consecutive (n, seq_len + 1) windows overlapping by one id: every id after the first is a
        target exactly once (a last partial window is dropped)."""
        self._check(seq_len)
        n = (len(self) - 1) // seq_len
        if max_windows is not None:
            n = min(n, max_windows)
        starts = torch.arange(n) * seq_len
        return self.ids[starts[:, None] + torch.arange(seq_len + 1)]
