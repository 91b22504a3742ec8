"""Show the package's own source in a notebook, so the book never keeps a second copy of the code.

``show_source(f)`` shows a whole function, class or method; ``show_source(f, start=..., stop=...)``
shows one piece of a long function, so that a chapter can walk through it a few lines at a time
with prose in between. The pieces are cut at lines of the real source, found by their text, so a
listing can never drift from the code: if the code changes so that a piece is no longer there,
``show_source`` raises and the chapter's test fails.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Optional

ELISION = "..."


def source_of(obj) -> str:
    """The source code of a function, class or module, dedented."""
    return textwrap.dedent(inspect.getsource(obj)).rstrip() + "\n"


def _find(lines: list[str], text: str, begin: int, obj, what: str) -> int:
    for i in range(begin, len(lines)):
        if text in lines[i]:
            return i
    name = getattr(obj, "__qualname__", repr(obj))
    raise ValueError(f"show_source: no line containing {text!r} ({what}) in the source of {name} "
                     f"after line {begin + 1} of {len(lines)}")


def source_part(obj, start: Optional[str] = None, stop: Optional[str] = None) -> str:
    """A piece of ``obj``'s source: from the first line containing ``start`` (default: the first
    line) up to, but not including, the next line containing ``stop`` (default: to the end).

    Omitted lines are marked by a ``# ...`` line at the indentation of the code around them, so
    the reader sees where the piece sits in the whole.
    """
    lines = source_of(obj).splitlines()
    a = 0 if start is None else _find(lines, start, 0, obj, "start")
    b = len(lines) if stop is None else _find(lines, stop, a + 1, obj, "stop")
    piece = lines[a:b]
    while piece and not piece[-1].strip():           # no trailing blank lines inside a piece
        piece.pop()

    def marker(neighbour: str) -> str:
        indent = len(neighbour) - len(neighbour.lstrip())
        return " " * indent + "# " + ELISION

    out = []
    if a > 0:
        out.append(marker(piece[0]))
    out.extend(piece)
    if b < len(lines):
        out.append(marker(lines[b]))
    return textwrap.dedent("\n".join(out)) + "\n"      # a piece from inside a function starts at column 0


def show_source(*objs, start: Optional[str] = None, stop: Optional[str] = None):
    """Display the source of ``objs`` as highlighted Python (a Markdown code block).

    With ``start`` / ``stop`` (one object only), show the piece between the line containing
    ``start`` and the line containing ``stop`` (see ``source_part``). In Jupyter and in the
    rendered book this shows as a syntax-highlighted listing; outside IPython it returns the text.
    """
    if (start is not None or stop is not None) and len(objs) != 1:
        raise ValueError("show_source: start= and stop= select a piece of exactly one object")
    if start is not None or stop is not None:
        text = source_part(objs[0], start, stop)
    else:
        text = "\n\n".join(source_of(o) for o in objs)
    try:
        from IPython.display import Markdown
    except ImportError:  # pragma: no cover
        return text
    return Markdown(f"```python\n{text}```")
