"""Small Sphinx fixes for the book's HTML (loaded from _config.yml: sphinx.local_extensions).

Duplicate inline scripts: with Sphinx 7.x, an inline script (no file, only a body) that an
extension adds with ``app.add_js_file(None, body=...)`` during the build can end up twice in a
page: once from the registry as ``_JavaScript('')`` and once as ``_JavaScript(None)``, which
Sphinx does not recognise as equal. sphinx-thebe's ``const THEBE_JS_URL = ...`` is such a
script, and declaring the same ``const`` twice is a JavaScript SyntaxError on every page. This
extension drops the second copy of any script whose file, body and attributes are identical.
"""

from __future__ import annotations


def _key(js):
    filename = getattr(js, "filename", js) or ""
    attributes = getattr(js, "attributes", {}) or {}
    return (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))


def dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen = set()
    unique = []
    for js in scripts:
        key = _key(js)
        if key in seen:
            continue
        seen.add(key)
        unique.append(js)
    context["script_files"] = unique


def setup(app):
    # run after every other html-page-context handler that may add scripts
    app.connect("html-page-context", dedupe_scripts, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
