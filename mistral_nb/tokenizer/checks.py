"""Argument checks shared by both tokenizers: text must be a valid Unicode ``str``; ids ints in range."""

from __future__ import annotations

import operator
import os
from collections.abc import Iterable


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # lone surrogates such as '\ud800'
        raise ValueError(f"text is not valid Unicode (lone surrogate at position {err.start})") from err
    return text


def _check_piece(piece: object) -> str:
    if not isinstance(piece, str):
        raise TypeError(f"piece must be a str such as '▁Hello', got {type(piece).__name__}")
    return piece


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool) and value not in (0, 1):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_path(path: object) -> str | os.PathLike:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike naming a tokenizer.model file, got {type(path).__name__}")
    if not str(path).strip():
        raise ValueError("path is empty: name a tokenizer.model file")
    return path


def _check_ids(ids: Iterable[int], vocab_size: int) -> list[int]:
    """Turn ``ids`` (list, tuple, 1-D tensor/array of ints) into a list, rejecting bad ids."""
    if isinstance(ids, (str, bytes)):
        raise TypeError("ids must be a sequence of ints, not a string")
    if getattr(ids, "ndim", 1) != 1:
        raise ValueError(f"ids must be a 1-D sequence of ints, got an array of shape {tuple(ids.shape)}")
    if not isinstance(ids, Iterable):
        raise TypeError(f"ids must be a sequence of ints, got {type(ids).__name__}")
    checked = []
    for position, token in enumerate(ids):
        if isinstance(token, bool) or str(getattr(token, "dtype", "")) == "torch.bool":
            raise TypeError(f"id at position {position} is a bool, not a token id: {token!r}")
        try:
            token = operator.index(token)  # int, numpy int or 0-d integer tensor
        except TypeError as err:
            raise TypeError(f"id at position {position} is not an int: {token!r}") from err
        if not 0 <= token < vocab_size:
            raise ValueError(f"id {token} at position {position} is out of range [0, {vocab_size})")
        checked.append(token)
    return checked

