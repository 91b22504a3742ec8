"""An author-year label style for the book's bibliography (pybtex plugin "authoryear").

Chapters cite with sphinxcontrib-bibtex's author-year referencing style, {cite:p}`key` giving
"[Jiang et al., 2023]". pybtex's built-in styles would label the list in book/references.md
[1], [2], ..., which a reader cannot match with the text; this style labels each entry the way
the text cites it and sorts the list by author and year. Selected in _config.yml with
`bibtex_default_style: authoryear`.
"""

from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _surname(person) -> str:
    return " ".join(person.prelast_names + person.last_names).replace("{", "").replace("}", "")


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = []
        for entry in sorted_entries:
            authors = [p for p in entry.persons.get("author", []) if str(p) != "others"]
            year = entry.fields.get("year", "n.d.")
            if not authors:
                name = entry.fields.get("title", "Anonymous").split(":")[0]
            elif len(authors) == 1 and len(entry.persons.get("author", [])) == 1:
                name = _surname(authors[0])
            elif len(authors) == 2 and len(entry.persons.get("author", [])) == 2:
                name = f"{_surname(authors[0])} and {_surname(authors[1])}"
            else:
                name = f"{_surname(authors[0])} et al."
            labels.append(f"{name}, {year}")
        # the same author(s) twice in one year: 2019a, 2019b
        counts, seen = Counter(labels), Counter()
        for label in labels:
            if counts[label] > 1:
                seen[label] += 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            else:
                yield label


class AuthorYearStyle(PlainStyle):
    default_label_style = AuthorYearLabelStyle
    default_sorting_style = "author_year_title"


def setup(app):
    register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
