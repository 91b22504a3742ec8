"""Argument checks shared by both tokenizers: text must be a valid Unicode ``str``; ids ints in range."""

from __future__ import annotations

import operator
from collections.abc import Iterable


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

