"""Reading small files from an untrusted checkpoint directory: regular files only, size-capped, strict JSON.

A checkpoint directory comes from the internet. Its ``config.json`` could be a named pipe (reading it
would wait forever), a symlink to ``/dev/zero`` (reading it would never end), a directory, or a
gigabyte of JSON. Every small file the package reads — configs, the sharded index, ``tokenizer.model``
— goes through ``read_regular_file``: it opens without blocking, asks the *opened* file what it is
(so a file swapped after a check cannot slip through), refuses anything but a regular file, and
reads at most ``limit`` bytes. ``parse_json`` then refuses what Python's ``json`` would accept
quietly or fail on obscurely: a key given twice (which value wins?), nesting deep enough to exhaust
the stack, numbers too long to convert. Every error names the file; the caller picks the exception
type (``ConfigError``, ``CheckpointError``, ``ValueError``).

What comes over the network gets the same care: ``call_with_deadline`` gives a call that waits on a
server (the Hub, a raw-file download) a total deadline, which a per-read socket timeout is not: a
server that accepts and never answers, or trickles a byte every half second, would hold it forever.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable

__all__ = ["describe_kind", "as_path", "open_regular_file", "read_regular_file", "parse_json", "call_with_deadline",
           "MAX_JSON_BYTES"]

MAX_JSON_BYTES = 16_000_000   # a 7B config.json is ~1 KB and its sharded index ~25 KB


def describe_kind(mode: int) -> str:
    """What an ``st_mode`` is, in words: 'a directory', 'a FIFO (named pipe)', ..."""
    for test, words in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return words
    return "not a regular file"


def as_path(path, what: str) -> Path:
    """``path`` as a Path; TypeError for anything but a str or os.PathLike, ValueError for an empty one
    (``Path("")`` is the current directory: a checkpoint read from, or written into, the working
    directory without a word)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path (str or os.PathLike), got {type(path).__name__}")
    if not str(path).strip():
        raise ValueError(f"{what} is empty ({str(path)!r}); give a directory ('.' for the current one)")
    return Path(path)


def open_regular_file(path: str | os.PathLike, what: str, error: type[Exception] = ValueError) -> BinaryIO:
    """Open ``path`` for binary reading if (after following symlinks) it is a regular file.

    Opened with O_NONBLOCK, so a FIFO cannot block the open, then checked with ``fstat`` on the open
    descriptor. Raises FileNotFoundError for a missing path and ``error`` (naming the path and what
    it is) for a directory, FIFO, device or socket.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise error(f"{path}: {what} is not a regular file (it is a directory)") from None
    except OSError as e:
        raise error(f"{path}: cannot open {what} ({e.strerror or e})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{path}: {what} is not a regular file (it is {describe_kind(mode)})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str | os.PathLike, limit: int, what: str, error: type[Exception] = ValueError) -> bytes:
    """The bytes of the regular file ``path``, refusing files over ``limit`` bytes (see ``open_regular_file``)."""
    with open_regular_file(path, what, error) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise error(f"{path}: {what} is {size:,} bytes, more than the {limit:,} this reader accepts")
        data = f.read(limit + 1)            # the file may have grown since fstat
    if len(data) > limit:
        raise error(f"{path}: {what} is more than the {limit:,} bytes this reader accepts")
    return data


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def parse_json(data: bytes | str, where: Any, error: type[Exception], problem: str = "not valid JSON") -> Any:
    """Parse JSON strictly; raise ``error("{where}: {problem} (reason)")`` on any defect.

    Refused beyond ``json.loads``: an object with a key given twice, nesting deep enough to raise
    RecursionError, and numbers too long for Python to convert (over 4300 digits).
    """
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as e:
        raise error(f"{where}: {problem} (the key {e.key!r} appears twice in one object; which value "
                    "is meant is ambiguous)") from None
    except RecursionError:
        raise error(f"{where}: {problem} (nested too deeply to parse)") from None
    except UnicodeDecodeError as e:
        raise error(f"{where}: {problem} (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except ValueError as e:                 # JSONDecodeError, and "Exceeds the limit (4300 digits)"
        raise error(f"{where}: {problem} ({e})") from None


def call_with_deadline(call: Callable[[], Any], seconds: float, what: str,
                       stop: threading.Event | None = None) -> Any:
    """``call()``'s result, or TimeoutError("{what}: no complete answer within {seconds} s") once the
    deadline passes. The call runs in a daemon thread; when it is late, ``stop`` is set (a call that
    reads in pieces checks it and ends) and the caller goes on at once. Its exceptions are re-raised."""
    box: dict = {}

    def work():
        try:
            box["value"] = call()
        except BaseException as e:  # handed over to the caller's thread
            box["error"] = e

    worker = threading.Thread(target=work, name=f"mistral_nb: {what}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        if stop is not None:
            stop.set()
        raise TimeoutError(f"{what}: no complete answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]
