"""Show the package's own source in a notebook, so the book never keeps a second copy of the code."""

from __future__ import annotations

import inspect
import textwrap


def source_of(obj) -> str:
    """The source code of a function, class or module, dedented."""
    return textwrap.dedent(inspect.getsource(obj)).rstrip() + "\n"


def show_source(*objs):
    """Display the source of ``objs`` as highlighted Python (a Markdown code block).

    In Jupyter and in the rendered book this shows as a syntax-highlighted listing; outside IPython
    it returns the plain text.
    """
    text = "\n\n".join(source_of(o) for o in objs)
    try:
        from IPython.display import Markdown
    except ImportError:  # pragma: no cover
        return text
    return Markdown(f"```python\n{text}```")
